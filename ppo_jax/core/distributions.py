"""Action distributions as pure functions of the policy head's output, and the two families a
policy can have: `Categorical` (Discrete actions; head output = logits [..., A]) and
`DiagGaussian` (Box actions; head output = (mean, log_std), each [..., D]).

Each family is a small frozen object with the same methods, chosen once from the action space
(`ppo_jax.envs.action_distribution`), so no other module branches on the kind of action:

    noise(key, shape)               pre-drawn randomness for `sample_with_noise`, [*shape, A|D]
    sample_with_noise(dist, noise)  (action, log π(action|s))
    sample(key, dist)               the same with fresh noise
    log_prob(dist, action)          log π(a|s) [...]
    entropy(dist)                   H[π(·|s)] [...]
    mode(dist)                      the deterministic action
    kl(dist_p, dist_q)              exact KL(p ‖ q) per state [...]
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ppo_jax import fast_paths

_LOG_2PI = math.log(2.0 * math.pi)


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """a ~ softmax(logits) via the Gumbel-max trick; logits [..., A] -> actions [...] int32."""
    return jax.random.categorical(key, logits).astype(jnp.int32)


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log π(a|s) = logits[a] − logsumexp(logits); logits [..., A], actions [...] -> [...]."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """H = −Σ_a π(a) log π(a); logits [..., A] -> [...]."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def categorical_kl(logits_p, logits_q):
    """Exact KL(p‖q) = Σ_a p(a) (log p(a) − log q(a)) of two categoricals; logits [..., A] -> [...].

    Non-negative; zero iff the two distributions are equal.
    """
    log_p = jax.nn.log_softmax(logits_p)
    log_q = jax.nn.log_softmax(logits_q)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


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


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """Exact KL(p‖q) of diagonal Gaussians, summed over dims:
    Σ_d [log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½]; [..., D] -> [...]."""
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    shift = jnp.square((mean_p - mean_q) * jnp.exp(-log_std_q))
    return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + shift) - 0.5, axis=-1)


@dataclasses.dataclass(frozen=True)
class Categorical:
    """A policy over `num_actions` discrete actions; the head outputs logits [..., A]. With
    `fast_paths`, log-probs and entropy are `fast_paths.categorical_*` (unrolled over ≤ 8
    actions), else the plain functions above."""

    num_actions: int
    fast_paths: bool = True

    def noise(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Gumbel(0, 1) noise [*shape, A], drawn in one call for many steps."""
        return jax.random.gumbel(key, (*shape, self.num_actions))

    def sample_with_noise(self, logits: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Gumbel-max: a = argmax(logits + g); returns (a [...] int32, log π(a|s) [...])."""
        action = jnp.argmax(logits + noise, axis=-1).astype(jnp.int32)
        return action, self.log_prob(logits, action)

    def sample(self, key: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        action = categorical_sample(key, logits)
        return action, self.log_prob(logits, action)

    def log_prob(self, logits: jax.Array, action: jax.Array) -> jax.Array:
        return (fast_paths.categorical_log_prob if self.fast_paths else categorical_log_prob)(logits, action)

    def entropy(self, logits: jax.Array) -> jax.Array:
        return (fast_paths.categorical_entropy if self.fast_paths else categorical_entropy)(logits)

    def mode(self, logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def kl(self, logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
        return categorical_kl(logits_p, logits_q)


@dataclasses.dataclass(frozen=True)
class DiagGaussian:
    """A policy over `action_dim` continuous dimensions; the head outputs (mean, log_std) [..., D]."""

    action_dim: int

    def noise(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """N(0, 1) noise [*shape, D], drawn in one call for many steps."""
        return jax.random.normal(key, (*shape, self.action_dim))

    def sample_with_noise(self, dist, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """a = μ + σ·ε and log π(a) = −Σ_d (½ε_d² + log σ_d + ½ log 2π)."""
        mean, log_std = dist
        action = mean + jnp.exp(log_std) * noise
        return action, -jnp.sum(0.5 * noise * noise + log_std + 0.5 * _LOG_2PI, axis=-1)

    def sample(self, key: jax.Array, dist) -> tuple[jax.Array, jax.Array]:
        mean, log_std = dist
        action = gaussian_sample(key, mean, log_std)
        return action, gaussian_log_prob(mean, log_std, action)

    def log_prob(self, dist, action: jax.Array) -> jax.Array:
        return gaussian_log_prob(*dist, action)

    def entropy(self, dist) -> jax.Array:
        return gaussian_entropy(dist[1])

    def mode(self, dist) -> jax.Array:
        return dist[0]

    def kl(self, dist_p, dist_q) -> jax.Array:
        return gaussian_kl(*dist_p, *dist_q)
