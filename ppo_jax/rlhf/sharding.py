"""Parameters and optimizer state sharded over the devices of a `jax.sharding` mesh (FSDP, i.e.
ZeRO stage 3: Rajbhandari et al. 2020), the batch of completions split along the same axis.

One mesh axis, `AXIS`, of n devices. A leaf [d_0, …, d_k] of at least `min_size` elements is
split along its largest dimension that n divides (the first such one on a tie), each device
holding [d_0, …, d_j / n, …, d_k]; smaller leaves (norms, biases, the scalar head, Adam's step
count) and leaves with no divisible dimension are replicated. The rule reads only the shape, so
Adam's moments are sharded exactly like their parameters. Batch arrays [B, …] are split along B
when n divides it. Inside the jitted RL phase the placement is a constraint
(`lax.with_sharding_constraint`); XLA's SPMD partitioner inserts the all-gathers of the weights
and the reductions of the gradients, so the program is the single-device one and the results
agree with one device up to the order of floating-point sums (tested with 2 host devices).

Per device, weights, gradients and optimizer state take about 1/n of their single-device bytes
(`rlhf.memory.estimate`); activations take 1/n when the batch splits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "fsdp"
MIN_SHARDED = 1 << 14  # elements: smaller leaves are replicated (not worth a collective)


class ParamSharding(NamedTuple):
    """The mesh and the size threshold (hashable: part of the static `RLSetup`)."""

    mesh: Mesh
    min_size: int = MIN_SHARDED

    @property
    def devices(self) -> int:
        return int(self.mesh.size)


def make_sharding(devices: Any = None, min_size: int = MIN_SHARDED) -> ParamSharding:
    """A 1-D mesh over `devices` (default: all of `jax.devices()`)."""
    devices = jax.devices() if devices is None else list(devices)
    return ParamSharding(Mesh(np.asarray(devices), (AXIS,)), min_size)


def leaf_spec(shape: tuple[int, ...], devices: int, min_size: int) -> P:
    """The `PartitionSpec` of one leaf by the module docstring's rule."""
    if devices < 2 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % devices == 0]
    if not divisible:
        return P()
    axis = -max(divisible)[1]
    return P(*([None] * axis), AXIS)


def param_specs(tree: Any, sharding: ParamSharding) -> Any:
    """`leaf_spec` of every array leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s)."""
    return jax.tree.map(lambda x: leaf_spec(tuple(x.shape), sharding.devices, sharding.min_size), tree)


def param_shardings(tree: Any, sharding: ParamSharding) -> Any:
    """`NamedSharding` of every leaf of `tree` on the mesh."""
    return jax.tree.map(lambda spec: NamedSharding(sharding.mesh, spec), param_specs(tree, sharding))


def place(tree: Any, sharding: ParamSharding | None) -> Any:
    """`tree` put on the mesh by the rule (outside a jitted program); unchanged without a mesh."""
    if sharding is None:
        return tree
    return jax.device_put(tree, param_shardings(tree, sharding))


def constrain(tree: Any, sharding: ParamSharding | None) -> Any:
    """Inside a jitted program: hold `tree`'s leaves sharded by the rule; identity without a mesh."""
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, param_shardings(tree, sharding))


def _batch_spec(x, devices: int) -> P:
    return P(AXIS) if x.ndim and x.shape[0] % devices == 0 else P()


def constrain_batch(tree: Any, sharding: ParamSharding | None) -> Any:
    """Inside a jitted program: split every leaf [B, …] of `tree` along B over the mesh (leaves
    whose B the device count does not divide stay replicated); identity without a mesh."""
    if sharding is None:
        return tree
    specs = jax.tree.map(lambda x: NamedSharding(sharding.mesh, _batch_spec(x, sharding.devices)), tree)
    return jax.lax.with_sharding_constraint(tree, specs)


def replicate(tree: Any, sharding: ParamSharding | None) -> Any:
    """Inside a jitted program: every leaf whole on every device (the operands and results of a
    host callback, such as a text reward, which XLA otherwise regathers with a warning)."""
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: NamedSharding(sharding.mesh, P()), tree))
