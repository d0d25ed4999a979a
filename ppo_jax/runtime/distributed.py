"""Scale-out: runs sharded across devices, one run's environments sharded across devices, and
JAX's multi-process runtime.

Three pieces, all with `jax.sharding` (no pmap):

- **Run sharding** (`run_mesh`, `put_runs`, `gather`): a batch of K runs (seeds × configurations)
  has a leading run axis; its inputs are placed with `NamedSharding(mesh, P("runs"))` and `jax.jit`
  partitions the vmapped program over the devices. Runs never communicate, so a run's result does
  not depend on how many devices computed it (up to float32 rounding, which depends on how many
  runs one device computes at once).
- **Env sharding** (`ppo_jax.engine.sharded`): one large run whose `num_envs` environments are
  split over the devices.
- **Processes** (`resolve_processes`, `initialize`; in `ppo_jax.runtime.processes`, re-exported here):
  `--coordinator-address HOST:PORT --num-processes P --process-id I`, else JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID, else SLURM (jax's auto-detection inside an `srun` step of
  several tasks).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import ConfigError
from ppo_jax.runtime.processes import Processes, initialize, resolve_processes  # noqa: F401  (re-exported)

RUN_AXIS = "runs"


def topology() -> dict[str, Any]:
    """What summary.json / sweep.json record about where the program ran."""
    return {
        "backend": jax.default_backend(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
    }


# ---------------------------------------------------------------------------------------------
# Run sharding


def run_mesh(devices: Any = None, axis: str = RUN_AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (axis,))


def lowering_mesh(mesh: Mesh | None):
    """The context to lower a program in: under `mesh` (so the progress callback's values are
    replicated before they go to the host, not gathered by XLA's fallback resharding with a
    warning per value), or no context for a program on one device."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_runs(tree: Any, mesh: Mesh, axis: str = RUN_AXIS) -> Any:
    """Place every leaf (the same host data on every process) with its leading axis sharded over
    `mesh`; typed PRNG keys are placed as key data and re-wrapped."""
    sharding = NamedSharding(mesh, P(axis))

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding))
        return _put(x, sharding)

    return jax.tree.map(put, tree)


def gather(tree: Any) -> Any:
    """NumPy copies of (possibly sharded, possibly multi-process) arrays, complete on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def check_divisible(count: int, devices: int, field: str, what: str) -> None:
    """`ConfigError` naming `field` unless `count` divides over `devices`."""
    if count % devices:
        raise ConfigError(
            field,
            f"{count} {what} do not divide over {devices} devices; use a multiple of {devices} "
            "(each device computes an equal share)",
        )
