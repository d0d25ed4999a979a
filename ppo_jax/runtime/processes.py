"""JAX's multi-process runtime: which processes to start (flags, environment or SLURM) and
starting it. Imports no environment code, so the CLI can decide before anything runs a JAX
computation (the CPU device count and the distributed runtime must both precede the first one).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import NamedTuple

import jax

from ppo_jax.config import ConfigError


class Processes(NamedTuple):
    """How to start JAX's distributed runtime; fields left None are auto-detected (SLURM)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    source: str  # "flags", "environment" or "slurm"


def _env_int(environ: Mapping[str, str], name: str, field: str) -> int | None:
    text = environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(field, f"{name}={text!r} is not an integer") from None


def _slurm_tasks(environ: Mapping[str, str]) -> int:
    """Tasks of the current srun step (0 outside an srun step)."""
    if "SLURM_JOB_ID" not in environ or "SLURM_STEP_ID" not in environ:
        return 0
    for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


def resolve_processes(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Processes | None:
    """The multi-process setting from flags, else environment variables, else SLURM; None for one
    process. Raises `ConfigError` for bad input (checked before anything starts)."""
    environ = os.environ if environ is None else environ
    source = "flags"
    if coordinator_address is None and num_processes is None and process_id is None:
        source = "environment"
        coordinator_address = environ.get("JAX_COORDINATOR_ADDRESS") or None
        num_processes = _env_int(environ, "JAX_NUM_PROCESSES", "num_processes")
        process_id = _env_int(environ, "JAX_PROCESS_ID", "process_id")
        if coordinator_address is None and num_processes is None and process_id is None:
            if _slurm_tasks(environ) > 1:
                return Processes(None, None, None, "slurm")
            return None
    if num_processes is None:
        raise ConfigError("num_processes", "give --num-processes P with --coordinator-address and --process-id")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ConfigError("num_processes", f"must be a positive integer, got {num_processes!r}")
    if process_id is None:
        process_id = 0 if num_processes == 1 else None
    if process_id is None:
        raise ConfigError("process_id", f"give --process-id I with 0 <= I < {num_processes}")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ConfigError(
            "process_id", f"must be in [0, {num_processes}) for {num_processes} processes, got {process_id}"
        )
    if num_processes == 1:
        return None
    if coordinator_address is None:
        raise ConfigError("coordinator_address", "give --coordinator-address HOST:PORT (the host of process 0)")
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("coordinator_address", f"expected HOST:PORT, got {coordinator_address!r}")
    return Processes(coordinator_address, num_processes, process_id, source)


def initialize(processes: Processes | None, timeout: int = 300) -> None:
    """Start JAX's distributed runtime (before any computation); a no-op for one process.

    On CPUs the collectives run over gloo. A coordinator that cannot be reached within `timeout`
    seconds raises `ConnectionError`.
    """
    if processes is None or jax.distributed.is_initialized():
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ConfigError("distributed_timeout", f"must be a positive integer of seconds, got {timeout!r}")
    if processes.coordinator_address is not None and processes.process_id != 0:
        _wait_for_coordinator(processes, timeout)  # jax aborts the process instead of raising
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # SIGINT/SIGTERM are the executor's (a stop agreed by all processes at a checkpoint); JAX's
    # preemption service would take SIGTERM for itself.
    jax.config.update("jax_enable_preemption_service", False)
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        # Importing gymnax already ran a computation (module-level constants); nothing of this
        # program has, so the local backend is dropped and recreated by the distributed runtime.
        xla_bridge._clear_backends()
        xla_bridge.get_backend.cache_clear()
    try:
        jax.distributed.initialize(
            processes.coordinator_address,
            processes.num_processes,
            processes.process_id,
            initialization_timeout=timeout,
        )
    except Exception as err:  # jax raises XlaRuntimeError / RuntimeError / ValueError here
        where = processes.coordinator_address or "auto-detected (SLURM)"
        who = "" if processes.process_id is None else f" as process {processes.process_id} of {processes.num_processes}"
        raise ConnectionError(
            f"could not start the distributed runtime with coordinator {where}{who} within {timeout} s: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err


def _wait_for_coordinator(processes: Processes, timeout: int) -> None:
    """Wait until the coordinator accepts TCP connections; `ConnectionError` after `timeout` s."""
    host, _, port = processes.coordinator_address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"could not start the distributed runtime with coordinator {processes.coordinator_address} "
                    f"as process {processes.process_id} of {processes.num_processes} within {timeout} s: "
                    f"nothing accepts connections there ({err.strerror or err}); start process 0 there first"
                ) from None
            time.sleep(0.2)
