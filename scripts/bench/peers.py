"""Implementations, workloads, the peers' virtual environments and the training subprocesses.

Every training run is its own subprocess (so peak RSS is measured the same way for all:
`os.wait4` on the child). Peers run in virtual environments created once and cached under
`$XDG_CACHE_HOME/ppo_jax_bench/<peer>/` (`~/.cache/...` without it; `PPO_JAX_BENCH_CACHE` or
`--cache` elsewhere), with their runners in `scripts/peers/`; ppo_jax runs in
`python scripts/benchmark.py _worker <json>` (`workers.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = SCRIPTS_DIR.parent
BENCHMARK_SCRIPT = SCRIPTS_DIR / "benchmark.py"
PEERS_DIR = SCRIPTS_DIR / "peers"
# Disk taken by the peers' environments once installed (rejax with jax/jaxlib 0.10.2, and SB3 with
# the CPU build of torch 2.13.0): about 2.3 GB for both, as reported for a first `--quick` install.
PEERS_INSTALL_SIZE = "about 2.3 GB for rejax and Stable-Baselines3 together"


def default_cache() -> Path:
    """Where the peers' environments live: $PPO_JAX_BENCH_CACHE, else $XDG_CACHE_HOME/ppo_jax_bench,
    else ~/.cache/ppo_jax_bench."""
    if os.environ.get("PPO_JAX_BENCH_CACHE"):
        return Path(os.environ["PPO_JAX_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ppo_jax_bench"


RESULT_PREFIX = "BENCH_RESULT "
# Extra XLA flags for every JAX child (ppo_jax and rejax alike). Empty: ppo_jax's initialiser no
# longer calls LAPACK QR (whose batched form deadlocked jaxlib 0.10's 2-thread CPU pool), and the
# scheduler flag that worked around it cost ppo_jax 15-20 % at 1 seed.
XLA_WORKAROUND = ""
FINAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Peer:
    """A peer implementation: pip requirements installed in order into its own venv, and its runner."""

    name: str
    label: str
    install_steps: tuple[tuple[str, ...], ...]
    constraints: tuple[str, ...]
    runner: str
    vmaps_seeds: bool


PEERS: dict[str, Peer] = {
    "rejax": Peer(
        "rejax",
        "rejax 0.1.3 (JAX)",
        (("rejax==0.1.3", "gymnax==0.0.9", "jax==0.10.2", "jaxlib==0.10.2"),),
        (),
        "rejax_runner.py",
        True,
    ),
    "sb3": Peer(
        "sb3",
        "Stable-Baselines3 2.9.2 (PyTorch CPU)",
        # torch first, alone and pinned, so that pip takes the CPU wheel and never a CUDA build.
        (("torch==2.13.0",), ("stable-baselines3==2.9.2", "gymnasium==1.4.0", "minatar==1.0.15")),
        ("torch==2.13.0",),
        "sb3_runner.py",
        False,
    ),
}
# "ppo_jax" spreads the seeds of a many-seed run over the CPU cores as separate JAX devices (as
# `ppo-jax train --seeds N` does); "ppo_jax_1dev" is the same program on one device.
IMPLS = ("ppo_jax", "ppo_jax_1dev", *PEERS)
OURS = ("ppo_jax", "ppo_jax_1dev")
LABELS = {"ppo_jax": "ppo_jax", "ppo_jax_1dev": "ppo_jax, 1 device", **{p.name: p.label for p in PEERS.values()}}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark setting: a gymnax env and overrides of ppo_jax's `default_config(env)`.

    `many_overrides` apply to the many-seed runs: on 2 CPU cores 32 seeds of the full Pendulum or
    Breakout budget would take hours, so those rows measure throughput at a shorter budget.
    """

    name: str
    env: str
    overrides: dict[str, Any]
    quick_overrides: dict[str, Any]
    many_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


WORKLOADS: dict[str, Workload] = {
    "cartpole": Workload(
        "cartpole",
        "CartPole-v1",
        dict(
            num_envs=4,
            num_steps=128,
            num_epochs=4,
            num_minibatches=4,
            hidden_sizes=(64, 64),
            activation="tanh",
            lr=2.5e-4,
            total_timesteps=500_000,
        ),
        dict(total_timesteps=8_192),
    ),
    "pendulum": Workload(
        "pendulum", "Pendulum-v1", {}, dict(total_timesteps=16 * 128 * 4), dict(total_timesteps=16 * 128 * 48)
    ),
    "breakout": Workload(
        "breakout",
        "Breakout-MinAtar",
        dict(total_timesteps=1_000_000),
        dict(total_timesteps=64 * 128 * 2),
        dict(total_timesteps=64 * 128 * 8),
    ),
}


def workload_config(workload: Workload, quick: bool, many: bool = False, **extra: Any) -> dict[str, Any]:
    """The resolved ppo_jax config (as a JSON-able dict) that every implementation is set up from."""
    from ppo_jax.config import default_config

    overrides = {**workload.overrides, **(workload.many_overrides if many and not quick else {})}
    cfg = default_config(workload.env, **{**overrides, **(workload.quick_overrides if quick else {}), **extra})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}


# --- subprocesses and peer environments -----------------------------------------------------


_QUIET: list[bool] = [False]


def set_quiet(quiet: bool) -> None:
    """`log` says nothing when `quiet` (`--quiet`); errors and the final line still show."""
    _QUIET[0] = quiet


def log(msg: str) -> None:
    if _QUIET[0]:
        return
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def worker_command(spec: dict[str, Any]) -> list[str]:
    """The command line of a ppo_jax child: this benchmark's script with `_worker <json>`."""
    return [sys.executable, str(BENCHMARK_SCRIPT), "_worker", json.dumps(spec)]


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one ppo_jax worker task (`workers.WORKER_TASKS`) in a child; its record plus RSS."""
    return run_child(worker_command(spec), jax_env(), timeout)


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 7200.0) -> dict[str, Any]:
    """Run `cmd`, wait with `os.wait4` and return its result line, peak RSS (MB) and wall time."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
        status, usage = _wait(proc, timeout)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln[len(RESULT_PREFIX) :] for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    record: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    record.update(
        rss_peak_mb=usage.ru_maxrss / 1024 if usage else None,
        wall_s=wall,
        load_avg_1m=[load_before, os.getloadavg()[0]],
    )
    if status != 0 or not lines:
        record["error"] = f"exit status {status}: " + (stderr or stdout)[-2000:]
    return record


def _wait(proc: subprocess.Popen, timeout: float):
    """Wait for `proc` (killing it after `timeout` s); (exit status, rusage of that child alone)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return -9, usage
        time.sleep(0.05)


def _wanted(peer: Peer) -> dict[str, Any]:
    return json.loads(json.dumps({"install_steps": peer.install_steps, "constraints": peer.constraints}))


def peer_env_ready(peer: Peer, cache: Path) -> bool:
    """Whether `peer`'s venv under `cache` is installed with its current requirements."""
    root = cache / peer.name
    stamp = root / "ppo_jax_bench.json"
    try:
        return (root / "bin" / "python").exists() and json.loads(stamp.read_text()) == _wanted(peer)
    except (OSError, ValueError):
        return False


def ensure_peer_env(peer: Peer, cache: Path) -> Path:
    """The Python of `peer`'s cached venv, creating and installing it on first use."""
    root = cache / peer.name
    python = root / "bin" / "python"
    stamp = root / "ppo_jax_bench.json"
    want = _wanted(peer)
    if peer_env_ready(peer, cache):
        return python
    log(f"creating the {peer.name} environment in {root} (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if peer.constraints:
        (root / "constraints.txt").write_text("\n".join(peer.constraints) + "\n")
        pip += ["--constraint", str(root / "constraints.txt")]
    with open(root / "install.log", "w") as install_log:
        for step in peer.install_steps:
            if subprocess.run([*pip, *step], stdout=install_log, stderr=subprocess.STDOUT).returncode:
                raise OSError(f"pip install {' '.join(step)} failed; see {root / 'install.log'}")
    stamp.write_text(json.dumps(want))
    return python


def jax_env() -> dict[str, str]:
    """Environment for JAX children: the deadlock workaround added to any XLA_FLAGS given."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_WORKAROUND}".strip()
    return env


# --- one training run of one implementation ----------------------------------------------------


def run_impl(impl: str, config: dict, seeds: int, args, python: Path | None) -> dict[str, Any]:
    """Train `seeds` seeds of `impl` with `config` in a subprocess; the runner's record plus RSS."""
    spec = {"config": config, "seeds": seeds, "eval_episodes": args.eval_episodes}
    if impl in OURS:
        spec["split_cores"] = impl == "ppo_jax"
        cmd, env = worker_command({"task": "train", **spec}), jax_env()
    else:
        spec["torch_threads"] = args.torch_threads
        cmd = [str(python), str(PEERS_DIR / PEERS[impl].runner), json.dumps(spec)]
        env = jax_env() if impl == "rejax" else dict(os.environ)
    log(f"{impl} {config['env']} seeds={seeds} steps={config['total_timesteps']}")
    record = run_child(cmd, env, args.timeout)
    record.update(impl=impl, env=config["env"], seeds=seeds, total_timesteps=config["total_timesteps"])
    summarize(record)
    if "error" in record:
        log(f"  failed: {record['error'][-400:]}")
    else:
        log(f"  compile {record['compile_s']}  run {record['run_s']:.1f}s  {record['steps_per_s']:.0f} steps/s")
    return record


def summarize(record: dict[str, Any]) -> None:
    """Add steps/s, final return (last 10 % of updates, mean over seeds) and a learning curve."""
    import numpy as np

    if "update_returns" not in record:
        return
    returns = np.array([[np.nan if x is None else x for x in row] for row in record.pop("update_returns")], float)
    steps = record["env_steps_per_seed"] * record["seeds"]
    record["steps_per_s"] = steps / record["run_s"] if record["run_s"] > 0 else None
    tail = max(1, int(round(returns.shape[1] * FINAL_FRACTION)))
    with np.errstate(all="ignore"), _quiet():
        per_seed = np.nanmean(returns[:, -tail:], axis=1)
        curve = np.nanmean(returns, axis=0)
    record["final_return_per_seed"] = [None if np.isnan(x) else round(float(x), 3) for x in per_seed]
    record["final_return"] = _mean_std(per_seed)
    if record.get("eval_returns"):
        record["eval_return"] = _mean_std(np.asarray(record["eval_returns"], float))
    bins = np.array_split(np.arange(len(curve)), min(len(curve), 100))  # mean over bins of updates
    with np.errstate(all="ignore"), _quiet():
        values = [float(np.nanmean(curve[b])) for b in bins]
    record["curve"] = {
        "env_steps": [int((b[-1] + 1) * record["steps_per_update"]) for b in bins],
        "return": [None if np.isnan(v) else round(v, 3) for v in values],
    }


def _mean_std(x) -> dict[str, float | None]:
    import numpy as np

    x = x[~np.isnan(x)]
    if not len(x):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "n": int(len(x))}


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def extrapolated_sb3(one_seed: dict[str, Any], seeds: int) -> dict[str, Any]:
    """SB3 has no vectorisation over seeds: N seeds take N × the 1-seed time (one after another)."""
    record = dict(one_seed)
    record.update(seeds=seeds, run_s=one_seed["run_s"] * seeds, extrapolated=True)
    if one_seed.get("setup_s") is not None:
        record["setup_s"] = one_seed["setup_s"] * seeds
    return record
