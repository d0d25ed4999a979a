"""Flax actor and critic MLPs and the two policy heads (Categorical, diagonal Gaussian).

Initialisation follows Huang et al. 2022: orthogonal weights with gain √2 on hidden layers,
0.01 on the policy head and 1.0 on the value head; zero biases. The Gaussian head has a
state-independent log-std parameter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
_LOG_2PI = math.log(2.0 * math.pi)


HIDDEN_GAIN = math.sqrt(2.0)  # orthogonal-init gains (Huang et al. 2022)
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0


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
    """Flax initializer: `gain` × a random orthogonal matrix (rows or columns orthonormal)."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = jax.random.normal(key, (rows, cols), jnp.float32)
        return (gain * polar_orthogonal(a)).reshape(shape).astype(dtype)

    return init


def _dense(features: int, gain: float, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros, name=name)


class MLP(nn.Module):
    """Hidden layers `hidden_sizes` with `activation`, then a linear head of `out` units."""

    hidden_sizes: Sequence[int]
    out: int
    out_gain: float
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden_sizes):
            x = act(_dense(width, HIDDEN_GAIN, f"hidden_{i}")(x))
        return _dense(self.out, self.out_gain, "head")(x)


class Actor(nn.Module):
    """Policy network. Discrete: returns logits [..., A]. Continuous: returns (mean, log_std)."""

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array, init_log_std: float | jax.Array = 0.0):
        out = MLP(self.hidden_sizes, self.action_dim, POLICY_HEAD_GAIN, self.activation, name="mlp")(obs)
        if self.discrete:
            return out
        log_std = self.param("log_std", lambda _, shape: jnp.full(shape, init_log_std, jnp.float32), (self.action_dim,))
        return out, jnp.broadcast_to(log_std, out.shape)


class Critic(nn.Module):
    """State-value network: V(s) with shape [...] (the unit axis is squeezed)."""

    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, 1, VALUE_HEAD_GAIN, self.activation, name="mlp")(obs)[..., 0]


class PolicyOutput(NamedTuple):
    """One forward pass of actor and critic: `dist` parameters and `value` [...]."""

    dist: jax.Array | tuple[jax.Array, jax.Array]
    value: jax.Array


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs evaluated in one call (one trace, one fused program).

    Observations are flattened after the batch dimensions given by `obs_ndim`.
    """

    action_dim: int
    discrete: bool
    obs_ndim: int = 1
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    def setup(self):
        self.actor = Actor(self.action_dim, self.discrete, self.hidden_sizes, self.activation)
        self.critic = Critic(self.hidden_sizes, self.activation)

    def _flat(self, obs: jax.Array) -> jax.Array:
        batch = obs.shape[: obs.ndim - self.obs_ndim]
        return obs.reshape(*batch, -1).astype(jnp.float32)

    def __call__(self, obs: jax.Array, init_log_std: float | jax.Array = 0.0) -> PolicyOutput:
        x = self._flat(obs)
        return PolicyOutput(self.actor(x, init_log_std), self.critic(x))

    def value(self, obs: jax.Array) -> jax.Array:
        return self.critic(self._flat(obs))


def _kernel_gain(path: tuple[str, ...]) -> float:
    """Gain of the kernel at `path` in `ActorCritic` parameters (set by `MLP`, `Actor`, `Critic`)."""
    if path[-2] != "head":
        return HIDDEN_GAIN
    return POLICY_HEAD_GAIN if "actor" in path else VALUE_HEAD_GAIN


def init_actor_critic(network: ActorCritic, key: jax.Array, obs: jax.Array, init_log_std=0.0) -> Any:
    """Parameters distributed as `network.init(key, obs, init_log_std)`'s, drawn faster to compile.

    Kernels: gain × Haar-orthogonal (gains √2 hidden, 0.01 policy head, 1 value head); biases 0;
    Gaussian `log_std` = `init_log_std`. All kernels come from one normal draw of Σ m·n numbers
    and one batched Newton–Schulz loop (`polar_orthogonal_many`): Flax's per-layer initializers trace a
    random draw and a loop per kernel, which cost ~0.8 s of XLA compile time on CPU for the two
    64-wide MLPs. A different random stream from `network.init` for the same key.
    """
    abstract = jax.eval_shape(network.init, key, obs, init_log_std)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(k.key for k in path) for path, _ in leaves]
    shapes = [leaf.shape for _, leaf in leaves]
    kernels = [i for i, path in enumerate(paths) if path[-1] == "kernel"]
    sizes = [math.prod(shapes[i]) for i in kernels]
    normal = jax.random.normal(key, (sum(sizes),), jnp.float32)
    parts = jnp.split(normal, np.cumsum(sizes)[:-1])
    draws = [part.reshape(-1, shapes[i][-1]) for i, part in zip(kernels, parts, strict=True)]
    orthogonal_kernels = dict(zip(kernels, polar_orthogonal_many(draws), strict=True))
    values = []
    for i, (path, shape) in enumerate(zip(paths, shapes, strict=True)):
        if i in orthogonal_kernels:
            w = _kernel_gain(path) * orthogonal_kernels[i].reshape(shape)
        elif path[-1] == "log_std":
            w = jnp.full(shape, init_log_std, jnp.float32)
        else:  # biases
            w = jnp.zeros(shape, jnp.float32)
        values.append(w.astype(leaves[i][1].dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


# --- fused forward pass for the rollout -----------------------------------------------------


class FusedActorCritic(NamedTuple):
    """Actor and critic MLPs packed into one MLP (same function, fewer XLA ops per step).

    Layer 0: W = [W_actor | W_critic]; later layers: block-diagonal diag(W_actor, W_critic). The
    last layer yields [..., A + 1]: the actor head's A outputs, then the value.
    """

    kernels: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    log_std: jax.Array | None


def _block_diag(a: jax.Array, b: jax.Array) -> jax.Array:
    top = jnp.concatenate([a, jnp.zeros((a.shape[0], b.shape[1]), a.dtype)], axis=1)
    bottom = jnp.concatenate([jnp.zeros((b.shape[0], a.shape[1]), b.dtype), b], axis=1)
    return jnp.concatenate([top, bottom], axis=0)


def fuse_actor_critic(params: Any) -> FusedActorCritic:
    """Pack `ActorCritic` parameters into a `FusedActorCritic` (done once per rollout)."""
    actor, critic = params["params"]["actor"], params["params"]["critic"]
    names = [n for n in actor["mlp"] if n.startswith("hidden_")]
    names = sorted(names, key=lambda n: int(n.split("_")[1])) + ["head"]
    kernels, biases = [], []
    for i, name in enumerate(names):
        a, c = actor["mlp"][name], critic["mlp"][name]
        if i == 0:
            kernels.append(jnp.concatenate([a["kernel"], c["kernel"]], axis=1))
        else:
            kernels.append(_block_diag(a["kernel"], c["kernel"]))
        biases.append(jnp.concatenate([a["bias"], c["bias"]]))
    return FusedActorCritic(tuple(kernels), tuple(biases), actor.get("log_std"))


def fused_apply(network: ActorCritic, fused: FusedActorCritic, obs: jax.Array) -> PolicyOutput:
    """The same `PolicyOutput` as `network.apply(params, obs)` from packed parameters."""
    act = _ACTIVATIONS[network.activation]
    batch = obs.shape[: obs.ndim - network.obs_ndim]
    x = obs.reshape(*batch, -1).astype(jnp.float32)
    last = len(fused.kernels) - 1
    for i, (w, b) in enumerate(zip(fused.kernels, fused.biases, strict=True)):
        x = x @ w
        x = x + jnp.broadcast_to(b, x.shape)
        if i < last:
            x = act(x)
    head, value = x[..., : network.action_dim], x[..., network.action_dim]
    if network.discrete:
        return PolicyOutput(head, value)
    return PolicyOutput((head, jnp.broadcast_to(fused.log_std, head.shape)), value)


# --- policy distributions: pure functions of the head outputs -------------------------------


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """a ~ softmax(logits) via the Gumbel-max trick; logits [..., A] -> actions [...] int32."""
    return jax.random.categorical(key, logits).astype(jnp.int32)


# Up to this many actions, log-softmax is written as elementwise ops over the action columns:
# XLA on CPU runs a reduction over a tiny minor axis as a separate, slow kernel.
_UNROLL_ACTIONS = 8


def log_softmax(logits: jax.Array) -> jax.Array:
    """log π(a) = x_a − m − log Σ_b exp(x_b − m), m = max_b x_b (held constant under grad);
    logits [..., A] -> [..., A]. Same values and gradient as `jax.nn.log_softmax`."""
    num = logits.shape[-1]
    if num > _UNROLL_ACTIONS:
        return jax.nn.log_softmax(logits)
    cols = [logits[..., a] for a in range(num)]
    shift = lax.stop_gradient(functools.reduce(jnp.maximum, cols))
    total = functools.reduce(jnp.add, [jnp.exp(c - shift) for c in cols])
    return logits - (shift + jnp.log(total))[..., None]


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log π(a|s) = logits[a] − logsumexp(logits); logits [..., A], actions [...] -> [...]."""
    log_p = log_softmax(logits)
    num = logits.shape[-1]
    if num > _UNROLL_ACTIONS:
        return jnp.take_along_axis(log_p, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
    picked = [jnp.where(actions == a, log_p[..., a], 0.0) for a in range(num)]
    return functools.reduce(jnp.add, picked)


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """H = −Σ_a π(a) log π(a); logits [..., A] -> [...]."""
    log_p = log_softmax(logits)
    num = logits.shape[-1]
    if num > _UNROLL_ACTIONS:
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return -functools.reduce(jnp.add, [jnp.exp(log_p[..., a]) * log_p[..., a] for a in range(num)])


def gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """a = μ + σ·ε, ε ~ N(0, I); mean, log_std [..., D] -> [..., D]."""
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """log N(a; μ, diag σ²) summed over action dims: −Σ_d [½((a−μ)/σ)² + log σ + ½ log 2π] -> [...]."""
    z = (actions - mean) * jnp.exp(-log_std)
    return -jnp.sum(0.5 * z * z + log_std + 0.5 * _LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """H = Σ_d (log σ_d + ½ log 2πe); log_std [..., D] -> [...]."""
    return jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)


def action_noise(key: jax.Array, shape: tuple[int, ...], action_dim: int, discrete: bool) -> jax.Array:
    """Noise for `sample_with_noise`, drawn in one call for many steps: Gumbel(0, 1) [*shape, A]
    for a Categorical policy, N(0, 1) [*shape, D] for a Gaussian one."""
    if discrete:
        return jax.random.gumbel(key, (*shape, action_dim))
    return jax.random.normal(key, (*shape, action_dim))


def sample_with_noise(dist, noise: jax.Array, discrete: bool) -> tuple[jax.Array, jax.Array]:
    """(action, log π(action|s)) from pre-drawn noise.

    Categorical (Gumbel-max): a = argmax(logits + g), g ~ Gumbel. Gaussian: a = μ + σ·ε and
    log π(a) = −Σ_d (½ε_d² + log σ_d + ½ log 2π).
    """
    if discrete:
        action = jnp.argmax(dist + noise, axis=-1).astype(jnp.int32)
        return action, categorical_log_prob(dist, action)
    mean, log_std = dist
    action = mean + jnp.exp(log_std) * noise
    return action, -jnp.sum(0.5 * noise * noise + log_std + 0.5 * _LOG_2PI, axis=-1)


def sample_action(key: jax.Array, dist, discrete: bool) -> tuple[jax.Array, jax.Array]:
    """Sample an action from the head output and return (action, log π(action|s))."""
    if discrete:
        action = categorical_sample(key, dist)
        return action, categorical_log_prob(dist, action)
    mean, log_std = dist
    action = gaussian_sample(key, mean, log_std)
    return action, gaussian_log_prob(mean, log_std, action)


def log_prob_and_entropy(dist, actions: jax.Array, discrete: bool) -> tuple[jax.Array, jax.Array]:
    """(log π(a|s), H[π(·|s)]) for stored actions under the head output `dist`."""
    if discrete:
        return categorical_log_prob(dist, actions), categorical_entropy(dist)
    mean, log_std = dist
    return gaussian_log_prob(mean, log_std, actions), gaussian_entropy(log_std)


def mode_action(dist, discrete: bool) -> jax.Array:
    """The deterministic action: argmax of the logits or the Gaussian mean."""
    if discrete:
        return jnp.argmax(dist, axis=-1).astype(jnp.int32)
    return dist[0]
