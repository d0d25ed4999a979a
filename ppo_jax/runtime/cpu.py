"""CPU cores as JAX devices, so that independent runs (seeds) can be split over the cores.

On a CPU, XLA runs one device's program largely on one core: the small matrix products of a
PPO update do not split well across threads. Exposing the cores as separate CPU devices
(`jax_num_cpu_devices`) and sharding the run axis over them gives each core its own share of
the seeds. This must happen before JAX starts its backend, i.e. before the first computation;
importing `ppo_jax` runs none, but importing gymnax does (ppo_jax imports it on first use).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def devices_for_runs(num_runs: int, cores: int) -> int:
    """The largest d ≤ `cores` that divides `num_runs` (each device gets the same share)."""
    return max(d for d in range(1, max(1, min(cores, num_runs)) + 1) if num_runs % d == 0)


def count_set_by_user(environ: dict[str, str] | None = None) -> bool:
    """True when the environment already fixes the CPU device count (JAX_NUM_CPU_DEVICES, or
    --xla_force_host_platform_device_count in XLA_FLAGS)."""
    environ = os.environ if environ is None else environ
    return "JAX_NUM_CPU_DEVICES" in environ or "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", "")


def split_runs_over_cores(num_runs: int, cores: int | None = None) -> int:
    """Expose `devices_for_runs(num_runs, cores)` CPU devices; returns that count.

    Returns 0 and changes nothing when the user set the count, when one device is enough, or when
    JAX's backend has already started (the option can no longer change). Only the CPU backend
    is affected: on a GPU machine the runs still go to the GPUs.
    """
    import jax

    devices = devices_for_runs(num_runs, usable_cores() if cores is None else cores)
    if devices < 2 or count_set_by_user():
        return 0
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # the backend is running already
        return 0
    return devices


def compiler_options(fast_paths: bool = True) -> dict[str, int] | None:
    """Options for `jax.jit(f).lower(...).compile(compiler_options=...)` of a training program:
    `fast_paths.COMPILER_OPTIONS` when JAX runs on the CPU and the switch is on, else None
    (XLA's defaults)."""
    import jax

    from ppo_jax.fast_paths import select

    options = select(fast_paths).cpu_compiler_options
    return dict(options) if options and jax.default_backend() == "cpu" else None


def host_available_bytes() -> int:
    """The host's available memory in bytes: `MemAvailable` of /proc/meminfo, else the free pages
    the OS reports, else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30
