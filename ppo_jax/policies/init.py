"""Orthogonal initialisation (Saxe et al. 2014; the PPO defaults of Huang et al. 2022) without
LAPACK: polar factors by Newton–Schulz, and every kernel of a network drawn in one go.

Gains of the classic PPO network: √2 on hidden layers, 0.01 on the policy head, 1.0 on the value
head; zero biases. The alternative, `kernel_init="lecun_normal"`, is Flax's default (LeCun-normal
on every kernel, heads included), as rejax and gymnax-blines initialise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0
# Kernel initialisations: orthogonal with the gains above, or LeCun-normal on every kernel.
KERNEL_INITS = ("orthogonal", "lecun_normal")
# Flax's truncated-normal scaling: the standard deviation of N(0, 1) truncated to [−2, 2].
_TRUNCATED_STD = 0.87962566103423978


def polar_orthogonal(a: jax.Array, iterations: int = 64) -> jax.Array:
    """The orthogonal polar factor U = A (AᵀA)^(−1/2) of a matrix A [m, n] by Newton–Schulz:

        X_0 = A / ‖A‖_F,   X_{k+1} = 1.5·X_k − 0.5·X_k X_kᵀ X_k

    Every singular value of X_0 lies in (0, 1] and is mapped towards 1 (×1.5 while small, then
    quadratically), so X_k → U. For Gaussian A, U is Haar-distributed, like the Q of a QR
    factorisation with sign correction. Only matrix products: no LAPACK call, so batching the
    initialisation over seeds under `jax.vmap` stays plain XLA (a batched LAPACK QR deadlocked
    the CPU runtime's thread pool on 2-core machines).
    """
    return polar_orthogonal_many([a], iterations)[0]


def polar_orthogonal_many(matrices: Sequence[jax.Array], iterations: int = 64) -> list[jax.Array]:
    """`polar_orthogonal` of several matrices of any shapes, iterated together in one loop.

    Each matrix is turned tall (m ≥ n); matrices with the same m are stacked, zero-padded to the
    group's widest n. Zero columns stay zero under X ↦ 1.5·X − 0.5·X XᵀX and the Frobenius norm
    is unchanged, so each padded block converges to its own polar factor. One loop with two
    batched products per group replaces a loop per matrix (each one costs XLA compile time).
    """
    wide = [a.shape[0] < a.shape[1] for a in matrices]
    xs = [a.T if w else a for a, w in zip(matrices, wide, strict=True)]
    xs = [x / jnp.linalg.norm(x) for x in xs]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(x.shape[0], []).append(i)
    stacks = []
    for members in groups.values():
        cols = max(xs[i].shape[1] for i in members)
        stacks.append(jnp.stack([jnp.pad(xs[i], ((0, 0), (0, cols - xs[i].shape[1]))) for i in members]))

    def step(x):  # full float32 products: TF32 on GPUs would cap the accuracy near 1e-3
        gram = jnp.matmul(x.mT, x, precision=lax.Precision.HIGHEST)
        return 1.5 * x - 0.5 * jnp.matmul(x, gram, precision=lax.Precision.HIGHEST)

    stacks = lax.fori_loop(0, iterations, lambda _, stacks: [step(x) for x in stacks], stacks)
    out: list[jax.Array] = [jnp.zeros(())] * len(xs)
    for members, stack in zip(groups.values(), stacks, strict=True):
        for j, i in enumerate(members):
            out[i] = stack[j, :, : xs[i].shape[1]]
    return [u.T if w else u for u, w in zip(out, wide, strict=True)]


def orthogonal(gain: float = 1.0):
    """Flax initializer: `gain` × a random orthogonal matrix (rows or columns orthonormal); a
    kernel [..., out] is orthogonalised as a [prod(...), out] matrix, as Flax's own does."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = jax.random.normal(key, (rows, cols), jnp.float32)
        return (gain * polar_orthogonal(a)).reshape(shape).astype(dtype)

    return init


def lecun_normal_kernels(key: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """LeCun-normal kernels, as Flax's `lecun_normal()` draws them, from one random draw:

        W = z · √(1 / fan_in) / 0.8796,   z ~ N(0, 1) truncated to [−2, 2],   fan_in = ∏ shape[:−1]

    so Var(W) = 1 / fan_in (LeCun et al. 1998). A different random stream from Flax's."""
    sizes = [math.prod(s) for s in shapes]
    draw = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32)
    parts = jnp.split(draw, np.cumsum(sizes)[:-1])
    return [
        (p * (math.sqrt(1.0 / math.prod(s[:-1])) / _TRUNCATED_STD)).reshape(s)
        for p, s in zip(parts, shapes, strict=True)
    ]


def init_in_one_draw(
    module: Any,
    key: jax.Array,
    args: tuple,
    gain: Callable[[tuple[str, ...]], float],
    fill: Callable[[tuple[str, ...], tuple[int, ...]], jax.Array | None] = lambda path, shape: None,
    kernel_init: str = "orthogonal",
) -> Any:
    """Parameters of `module.init(key, *args)`'s structure with every `kernel` = gain(path) ×
    Haar-orthogonal, other leaves `fill(path, shape)` or zeros (biases).

    All kernels come from one normal draw of Σ m·n numbers and one batched Newton–Schulz loop
    (`polar_orthogonal_many`): Flax's per-layer initialisers trace a random draw and a loop per
    kernel, which cost ~0.8 s of XLA compile time on CPU for two 64-wide MLPs. A different random
    stream from `module.init` for the same key. With `kernel_init="lecun_normal"` every kernel is
    LeCun-normal instead (`lecun_normal_kernels`; `gain` unused).
    """
    abstract = jax.eval_shape(module.init, key, *args)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(k.key for k in path) for path, _ in leaves]
    shapes = [leaf.shape for _, leaf in leaves]
    kernels = [i for i, path in enumerate(paths) if path[-1] == "kernel"]
    if kernel_init == "lecun_normal":
        drawn = dict(zip(kernels, lecun_normal_kernels(key, [shapes[i] for i in kernels]), strict=True))
    elif kernel_init == "orthogonal":
        sizes = [math.prod(shapes[i]) for i in kernels]
        normal = jax.random.normal(key, (sum(sizes),), jnp.float32)
        parts = jnp.split(normal, np.cumsum(sizes)[:-1])
        draws = [part.reshape(-1, shapes[i][-1]) for i, part in zip(kernels, parts, strict=True)]
        orthogonal_kernels = polar_orthogonal_many(draws)
        drawn = {i: gain(paths[i]) * u.reshape(shapes[i]) for i, u in zip(kernels, orthogonal_kernels, strict=True)}
    else:
        raise ValueError(f"kernel_init must be one of {', '.join(KERNEL_INITS)}, got {kernel_init!r}")
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
    """`fill` for `init_in_one_draw`: Gaussian `log_std` leaves start at `init_log_std`."""

    def fill(path: tuple[str, ...], shape: tuple[int, ...]):
        return jnp.full(shape, init_log_std, jnp.float32) if path[-1] == "log_std" else None

    return fill
