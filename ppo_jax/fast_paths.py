"""CPU fast paths: faster forms of plain Flax/JAX calls, all behind one switch.

The switch is the static config field `fast_paths` (default True; `--no-fast-paths` on the
command line; recorded in `config.json`). `select(fast_paths)` returns the `Paths` record a part
uses (`FAST` the forms below, `PLAIN` the Flax/JAX calls they replace); the families and
`distributions.Categorical` hold the switch for their own pairs. Each pair is tested
to agree (`tests/test_fast_paths.py`; tolerances there):

- init: every kernel from one normal draw, orthogonal polar factors by one batched
  Newton–Schulz loop (`one_draw_kernels`). Plain: Flax's `orthogonal` draw (factorised by
  `gram_schmidt_q`, no LAPACK) or `lecun_normal` per kernel (`per_kernel_init`). Buys compile
  time.
- mlp rollout: actor and critic packed into one block-diagonal MLP (`fuse_actor_critic`,
  `fused_apply`). Plain: the separate actor and critic `nn.Dense` layers. Halves the kernels per
  rollout step.
- gru update: the recurrence with a hand-written backward pass (`gru_sequence`). Plain: `lax.scan`
  of the family's `apply`, differentiated by JAX. The recurrent weights' gradient becomes one
  product instead of a read-modify-write per step.
- minibatch order: a sort of packed 32-bit keys (`permutation`). Plain: `jax.random.permutation`.
  One integer sort operand.
- categorical log-prob and entropy unrolled over ≤ 8 actions (`log_softmax`,
  `categorical_log_prob`, `categorical_entropy`). Plain: `distributions.categorical_*`
  (`jax.nn.log_softmax`, `take_along_axis`, `sum`). No reduction over a tiny minor axis.
- a run axis of size 1 traced without the axis (`vmap_runs`). Plain: `jax.vmap`.
- LLVM -O1 for the CPU backend (`COMPILER_OPTIONS`). Plain: XLA's default -O2. Compile time.

Fast and plain draw different random streams for the same key (initial kernels, minibatch
order), so their runs agree in distribution, not bit for bit; every other pair agrees to
float32 rounding. Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# --- initialisation -----------------------------------------------------------------------------

# Flax's truncated-normal scaling: the standard deviation of N(0, 1) truncated to [−2, 2].
_TRUNCATED_STD = 0.87962566103423978


def polar_orthogonal_many(matrices: Sequence[jax.Array], iterations: int = 64) -> list[jax.Array]:
    """The orthogonal polar factors U = A (AᵀA)^(−1/2) of matrices A [m, n] by Newton–Schulz:

        X_0 = A / ‖A‖_F,   X_{k+1} = 1.5·X_k − 0.5·X_k X_kᵀ X_k  →  U

    (every singular value of X_0 lies in (0, 1] and is driven to 1). For Gaussian A, U is
    Haar-distributed, like the sign-corrected Q of a QR factorisation. Each matrix is turned tall
    (m ≥ n); matrices with the same m are stacked, zero-padded to the widest n (zero columns stay
    zero and the Frobenius norm is unchanged), so one loop of two batched products per group
    serves every kernel of a network, with no LAPACK call.
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


def one_draw_kernels(key: jax.Array, shapes: Sequence[tuple[int, ...]], gains: Sequence[float], kernel_init: str):
    """Kernels [*shape] from one random draw: "orthogonal": gain × Haar-orthogonal (a kernel
    [..., out] as a [prod(...), out] matrix, by `polar_orthogonal_many`); "lecun_normal":
    z · √(1 / fan_in) / 0.8796 with z ~ N(0, 1) truncated to [−2, 2] (Var = 1 / fan_in)."""
    sizes = [math.prod(s) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]
    if kernel_init == "lecun_normal":
        parts = jnp.split(jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32), cuts)
        scales = [math.sqrt(1.0 / math.prod(s[:-1])) / _TRUNCATED_STD for s in shapes]
        return [(p * c).reshape(s) for p, c, s in zip(parts, scales, shapes, strict=True)]
    parts = jnp.split(jax.random.normal(key, (sum(sizes),), jnp.float32), cuts)
    draws = [p.reshape(-1, s[-1]) for p, s in zip(parts, shapes, strict=True)]
    units = polar_orthogonal_many(draws)
    return [g * u.reshape(s) for g, u, s in zip(gains, units, shapes, strict=True)]


def gram_schmidt_q(a: jax.Array) -> jax.Array:
    """Q [n, m] of the QR factorisation A = QR of A [n, m] (n ≥ m, full rank) with diag(R) > 0,
    by classical Gram–Schmidt applied twice per column ("twice is enough": orthogonal to float
    rounding):  v = a_j − Q_{<j}(Q_{<j}ᵀ a_j) (twice),  q_j = v / ‖v‖.

    The same Q as LAPACK's QR after the sign correction Q·sign(diag R) (that Q is unique), with
    no LAPACK call: two batched LAPACK QRs running at once can deadlock XLA's CPU thread pool
    on a 2-core machine (seen with jaxlib 0.10.2 under `jax.vmap` over seeds)."""

    def column(j, q):
        v = lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        for _ in range(2):  # columns ≥ j of q are still zero
            v = v - jnp.matmul(q, jnp.matmul(v, q, precision=lax.Precision.HIGHEST), precision=lax.Precision.HIGHEST)
        return lax.dynamic_update_index_in_dim(q, v / jnp.linalg.norm(v), j, axis=1)

    return lax.fori_loop(0, a.shape[1], column, jnp.zeros_like(a))


def orthogonal(gain: float = 1.0) -> Callable:
    """Flax's `nn.initializers.orthogonal(gain)` (kernel [..., out] as a [prod(...), out] matrix;
    the same normal draw, the same matrix to float rounding), factorised by `gram_schmidt_q`
    instead of LAPACK."""

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        z = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype)
        q = gram_schmidt_q(z)
        q = q.T if rows < cols else q
        return jnp.asarray(gain, dtype) * q.reshape(tuple(shape))

    return init


def per_kernel_init(key: jax.Array, shapes: Sequence[tuple[int, ...]], gains: Sequence[float], kernel_init: str):
    """The plain path: Flax's `orthogonal(gain)` (as `orthogonal` draws it) or `lecun_normal()` on
    each kernel, one key each."""
    keys = jax.random.split(key, max(1, len(shapes)))
    if kernel_init == "lecun_normal":
        return [nn.initializers.lecun_normal()(k, s, jnp.float32) for k, s in zip(keys, shapes, strict=False)]
    inits = [orthogonal(g) for g in gains]
    return [init(k, s, jnp.float32) for init, k, s in zip(inits, keys, shapes, strict=False)]


# --- the fused actor-critic (rollout of the mlp family) -----------------------------------------

# Widest hidden layer for which the rollout packs actor and critic into one block-diagonal MLP:
# with few envs a step is bound by the number of kernels (packing halves it); with wide layers it
# is bound by FLOPs, which the zero blocks would double.
FUSE_MAX_WIDTH = 128


class FusedActorCritic(NamedTuple):
    """Actor and critic MLPs packed into one MLP. Layer 0: W = [W_actor | W_critic]; later
    layers: diag(W_actor, W_critic). The last layer yields [..., A + 1]: A actor outputs, then V."""

    kernels: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    log_std: jax.Array | None


def _block_diag(a: jax.Array, b: jax.Array) -> jax.Array:
    top = jnp.concatenate([a, jnp.zeros((a.shape[0], b.shape[1]), a.dtype)], axis=1)
    bottom = jnp.concatenate([jnp.zeros((b.shape[0], a.shape[1]), b.dtype), b], axis=1)
    return jnp.concatenate([top, bottom], axis=0)


def fuse_actor_critic(params: Any) -> FusedActorCritic:
    """Pack `{"actor": {"mlp": {hidden_i, head}}, "critic": ...}` parameters (once per rollout)."""
    actor, critic = params["params"]["actor"], params["params"]["critic"]
    names = sorted((n for n in actor["mlp"] if n.startswith("hidden_")), key=lambda n: int(n.split("_")[1]))
    kernels, biases = [], []
    for i, name in enumerate([*names, "head"]):
        a, c = actor["mlp"][name], critic["mlp"][name]
        join = (lambda x, y: jnp.concatenate([x, y], axis=1)) if i == 0 else _block_diag
        kernels.append(join(a["kernel"], c["kernel"]))
        biases.append(jnp.concatenate([a["bias"], c["bias"]]))
    return FusedActorCritic(tuple(kernels), tuple(biases), actor.get("log_std"))


def fused_apply(fused: FusedActorCritic, act: Callable, x: jax.Array, action_dim: int, discrete: bool):
    """(dist, value) of the packed MLP on flat float inputs x [..., F]: logits [..., A] or
    (mean, log_std) [..., A], and value [...] — what the separate actor and critic give."""
    last = len(fused.kernels) - 1
    for i, (w, b) in enumerate(zip(fused.kernels, fused.biases, strict=True)):
        x = x @ w
        x = x + jnp.broadcast_to(b, x.shape)
        if i < last:
            x = act(x)
    head, value = x[..., :action_dim], x[..., action_dim]
    return (head if discrete else (head, jnp.broadcast_to(fused.log_std, head.shape))), value


# --- the GRU recurrence (update of the gru family) -----------------------------------------------


def _gru_gates(h_prev, x, w_h, b_h):
    """One step (Cho et al. 2014) from h̃_{t−1} [N, H] and x_t [N, 3H]: (h_t, residuals r, z, n, g_n):
    r = σ(x_r + g_r), z = σ(x_z + g_z), n = tanh(x_n + r ⊙ g_n), h_t = (1 − z) ⊙ n + z ⊙ h̃_{t−1},
    g = h̃_{t−1} W_h + b_h."""
    xr, xz, xn = jnp.split(x, 3, axis=-1)
    gr, gz, gn = jnp.split(h_prev @ w_h + b_h.reshape((1,) * (h_prev.ndim - 1) + (-1,)), 3, axis=-1)
    r = jax.nn.sigmoid(xr + gr)
    z = jax.nn.sigmoid(xz + gz)
    n = jnp.tanh(xn + r * gn)
    return (1.0 - z) * n + z * h_prev, (r, z, n, gn)


def _gru_forward(w_h, b_h, h0, xs, resets):
    def step(h, inputs):
        x, reset = inputs
        h_prev = jnp.where(reset[..., None], 0.0, h)
        h, res = _gru_gates(h_prev, x, w_h, b_h)
        return h, (h, h_prev, res)

    _, (hs, h_prevs, res) = lax.scan(step, h0, (xs, resets))
    return hs, (h_prevs, res)


@jax.custom_vjp
def gru_sequence(w_h, b_h, h0, xs, resets):
    """h_1..h_T [T, N, H] from h_0 [N, H], projected inputs xs [T, N, 3H] (x_t = W_i u_t + b_i),
    resets [T, N] (h̃_{t−1} = 0 where reset_t), recurrent weights w_h [H, 3H], b_h [3H].

    The backward scan carries only ∂L/∂h and emits the gates' gradients ∂g_t; the weight gradient
    is then one product over all T·N steps, ∂L/∂W_h = Σ_t h̃_{t−1}ᵀ ∂g_t, instead of a [H, 3H]
    read-modify-write per step in the differentiated `lax.scan`. Per step, given ∂h:
        ∂a_n = ∂h ⊙ (1 − z)(1 − n²),  ∂z_z = ∂h ⊙ (h̃_{t−1} − n) z(1 − z),  ∂z_r = ∂a_n ⊙ g_n r(1 − r)
        ∂x = [∂z_r, ∂z_z, ∂a_n],  ∂g = [∂z_r, ∂z_z, ∂a_n ⊙ r],  ∂h̃_{t−1} = ∂h ⊙ z + ∂g W_hᵀ
    """
    return _gru_forward(w_h, b_h, h0, xs, resets)[0]


def _gru_fwd(w_h, b_h, h0, xs, resets):
    hs, (h_prevs, res) = _gru_forward(w_h, b_h, h0, xs, resets)
    return hs, (w_h, h_prevs, res, resets)


def _gru_bwd(saved, d_hs):
    w_h, h_prevs, (r, z, n, gn), resets = saved

    def step(dh_next, inputs):
        d_out, h_prev, r, z, n, gn, reset = inputs
        dh = d_out + dh_next
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        dr = da_n * gn * r * (1.0 - r)
        dx = jnp.concatenate([dr, dz, da_n], axis=-1)
        dg = jnp.concatenate([dr, dz, da_n * r], axis=-1)
        dh_prev = dh * z + dg @ w_h.T
        return jnp.where(reset[..., None], 0.0, dh_prev), (dx, dg)

    inputs = (d_hs, h_prevs, r, z, n, gn, resets)
    dh0, (dxs, dgs) = lax.scan(step, jnp.zeros_like(d_hs[0]), inputs, reverse=True)
    return jnp.einsum("tnh,tng->hg", h_prevs, dgs), jnp.sum(dgs, axis=(0, 1)), dh0, dxs, None


gru_sequence.defvjp(_gru_fwd, _gru_bwd)


# --- minibatch order ------------------------------------------------------------------------------


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of 0..n−1 [n] int32, by sorting packed 32-bit keys.

    Each round sorts k = (random bits with the low b = ⌈log2 n⌉ bits cleared) | position, one
    uint32 operand, then maps the positions through the order so far. A tie in the random bits
    keeps the previous order, so rounds repeat until n³ ≤ 2^(rounds·(32 − b)), the confidence
    `jax.random.permutation` asks of its own rounds (XLA sorts one integer operand without a
    comparator call per pair). For n > 2^24 it is `jax.random.permutation`.
    """
    bits = max(1, (n - 1).bit_length())
    if bits > 24:  # fewer than 8 random bits per round
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = -(-3 * bits // (32 - bits))
    index = jnp.arange(n, dtype=jnp.uint32)
    low = jnp.uint32((1 << bits) - 1)
    order = jnp.arange(n, dtype=jnp.int32)
    for round_key in jax.random.split(key, rounds):
        noise = jax.random.bits(round_key, (n,), jnp.uint32)
        position = lax.sort((noise & ~low) | index) & low
        order = order[position.astype(jnp.int32)]
    return order


def plain_permutation(key: jax.Array, n: int) -> jax.Array:
    """`jax.random.permutation(key, n)` as int32."""
    return jax.random.permutation(key, n).astype(jnp.int32)


# --- categorical log-probabilities ----------------------------------------------------------------

# Up to this many actions, the reductions over actions are written as elementwise ops over the
# action columns: XLA on CPU runs a reduction over a tiny minor axis as a separate, slow kernel.
UNROLL_ACTIONS = 8


def log_softmax(logits: jax.Array) -> jax.Array:
    """log π(a) = x_a − m − log Σ_b exp(x_b − m), m = max_b x_b (held constant under grad);
    logits [..., A] -> [..., A]; `jax.nn.log_softmax` for A > 8."""
    num = logits.shape[-1]
    if num > UNROLL_ACTIONS:
        return jax.nn.log_softmax(logits)
    cols = [logits[..., a] for a in range(num)]
    shift = lax.stop_gradient(functools.reduce(jnp.maximum, cols))
    total = functools.reduce(jnp.add, [jnp.exp(c - shift) for c in cols])
    return logits - (shift + jnp.log(total))[..., None]


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log π(a|s) = log_softmax(logits)[a]; logits [..., A], actions [...] -> [...]."""
    log_p = log_softmax(logits)
    num = logits.shape[-1]
    if num > UNROLL_ACTIONS:
        return jnp.take_along_axis(log_p, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return functools.reduce(jnp.add, [jnp.where(actions == a, log_p[..., a], 0.0) for a in range(num)])


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """H = −Σ_a π(a) log π(a); logits [..., A] -> [...]."""
    log_p = log_softmax(logits)
    num = logits.shape[-1]
    if num > UNROLL_ACTIONS:
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return -functools.reduce(jnp.add, [jnp.exp(log_p[..., a]) * log_p[..., a] for a in range(num)])


# --- batching runs and compiling -----------------------------------------------------------------


def vmap_runs(step: Callable) -> Callable:
    """`jax.vmap(step)`, except that a run axis of size 1 is traced without the axis (squeezed
    and restored): XLA's CPU programs for size-1 batched products and reductions were ~25 %
    slower than the same unbatched ones."""
    batched = jax.vmap(step)

    def one_or_many(hparams, state):
        if jax.tree.leaves(state)[0].shape[0] != 1:
            return batched(hparams, state)
        squeeze = functools.partial(jax.tree.map, lambda x: x[0])
        state, metrics = step(squeeze(hparams), squeeze(state))
        return jax.tree.map(lambda x: x[None], (state, metrics))

    return one_or_many


# LLVM's -O1 instead of XLA's default -O2 for the CPU backend: measured on 2 cores with the CartPole
# default, compiling takes 15-35 % less time (4.4 -> 3.6 s at 1 seed, 6.5 -> 4.3 s at 32 seeds)
# and training runs as fast (the hot loops are library kernels and simple fusions).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


class Paths(NamedTuple):
    """The implementations a run uses: `FAST` or `PLAIN` (see the module docstring)."""

    fast: bool
    init_kernels: Callable  # (key, shapes, gains, kernel_init) -> [kernel]
    permutation: Callable  # (key, n) -> [n] int32
    vmap_runs: Callable  # step(hparams, state) -> the same over a leading run axis
    cpu_compiler_options: dict


FAST = Paths(True, one_draw_kernels, permutation, vmap_runs, COMPILER_OPTIONS)
PLAIN = Paths(False, per_kernel_init, plain_permutation, jax.vmap, {})


def select(fast_paths: bool) -> Paths:
    """`FAST` when the switch is on, else `PLAIN`."""
    return FAST if fast_paths else PLAIN
