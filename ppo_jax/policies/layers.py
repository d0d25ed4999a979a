"""Flax building blocks shared by the policy families: an orthogonally initialised MLP, the actor
head (logits, or a Gaussian mean with a state-independent log-std) and the critic head."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax import fast_paths
from ppo_jax.policies.init import HIDDEN_GAIN, POLICY_HEAD_GAIN, VALUE_HEAD_GAIN

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}


def dense(features: int, gain: float, name: str) -> nn.Dense:
    """A Dense layer with gain × orthogonal kernel (Flax's initialiser, used by `module.init`; the
    families draw their parameters with `init.init_params`) and zero bias."""
    return nn.Dense(features, kernel_init=fast_paths.orthogonal(gain), bias_init=nn.initializers.zeros, name=name)


class MLP(nn.Module):
    """Hidden layers `hidden_sizes` with `activation`, then a linear head of `out` units."""

    hidden_sizes: Sequence[int]
    out: int
    out_gain: float
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden_sizes):
            x = act(dense(width, HIDDEN_GAIN, f"hidden_{i}")(x))
        return dense(self.out, self.out_gain, "head")(x)


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


def flatten_obs(obs: jax.Array, obs_ndim: int) -> jax.Array:
    """obs [*B, *obs_shape] (obs_shape of `obs_ndim` axes) -> float32 [*B, prod(obs_shape)]."""
    batch = obs.shape[: obs.ndim - obs_ndim]
    return obs.reshape(*batch, -1).astype(jnp.float32)
