"""Initialisation of the policy families' parameters (Saxe et al. 2014; the PPO defaults of
Huang et al. 2022): kernels orthogonal with gains √2 on hidden layers, 0.01 on the policy head,
1.0 on the value head, zero biases. The alternative, `kernel_init="lecun_normal"`, is Flax's
default (LeCun-normal on every kernel, heads included), as rejax and gymnax-blines initialise.

The kernels are drawn by the run's `fast_paths.Paths.init_kernels`: all at once from one draw
(fast) or by Flax's initialiser per kernel (plain); the same distribution, different streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ppo_jax import fast_paths

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0
# Kernel initialisations: orthogonal with the gains above, or LeCun-normal on every kernel.
KERNEL_INITS = ("orthogonal", "lecun_normal")


def init_params(
    module: Any,
    key: jax.Array,
    args: tuple,
    gain: Callable[[tuple[str, ...]], float],
    fill: Callable[[tuple[str, ...], tuple[int, ...]], jax.Array | None] = lambda path, shape: None,
    kernel_init: str = "orthogonal",
    fast: bool = True,
) -> Any:
    """Parameters of `module.init(key, *args)`'s structure: every `kernel` gain(path) × orthogonal
    (or LeCun-normal with `kernel_init="lecun_normal"`; `gain` unused), other leaves
    `fill(path, shape)` or zeros (biases). `fast` picks `fast_paths.FAST` (one draw, one batched
    Newton–Schulz loop: Flax's per-layer initialisers cost ~0.8 s of XLA compile time on CPU for
    two 64-wide MLPs) or `fast_paths.PLAIN` (Flax's initialiser per kernel)."""
    if kernel_init not in KERNEL_INITS:
        raise ValueError(f"kernel_init must be one of {', '.join(KERNEL_INITS)}, got {kernel_init!r}")
    abstract = jax.eval_shape(module.init, key, *args)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(k.key for k in path) for path, _ in leaves]
    shapes = [leaf.shape for _, leaf in leaves]
    kernels = [i for i, path in enumerate(paths) if path[-1] == "kernel"]
    draw = fast_paths.select(fast).init_kernels
    drawn = draw(key, [shapes[i] for i in kernels], [gain(paths[i]) for i in kernels], kernel_init)
    drawn = dict(zip(kernels, drawn, strict=True))
    values = []
    for i, (path, shape) in enumerate(zip(paths, shapes, strict=True)):
        if i in drawn:
            w = drawn[i]
        else:
            w = fill(path, shape)
            w = jnp.zeros(shape, jnp.float32) if w is None else w
        values.append(w.astype(leaves[i][1].dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


def actor_critic_gain(path: tuple[str, ...]) -> float:
    """Gain of the kernel at `path` in a network whose heads are named "head" under "actor" or
    "critic" subtrees: 0.01 for the policy head, 1 for the value head, √2 elsewhere."""
    if path[-2] != "head":
        return HIDDEN_GAIN
    return POLICY_HEAD_GAIN if "actor" in path else VALUE_HEAD_GAIN


def log_std_fill(init_log_std: Any):
    """`fill` for `init_params`: Gaussian `log_std` leaves start at `init_log_std`."""

    def fill(path: tuple[str, ...], shape: tuple[int, ...]):
        return jnp.full(shape, init_log_std, jnp.float32) if path[-1] == "log_std" else None

    return fill
