"""A policy family with LayerNorm and SiLU: separate actor and critic MLPs, each hidden layer
Dense -> LayerNorm -> SiLU (as in Ball et al. 2023's normalised critics), written against
`ppo_jax.policies.base` (the `PolicyFamily` protocol and the `Family` record).

`ln_width` is its own static field: the width of both hidden layers (it sets array shapes, so
a changed value compiles a new program).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax.fields import Field
from ppo_jax.policies.base import Family


class NormedMLP(nn.Module):
    """[*B, F] -> [*B, out]: two hidden layers Dense -> LayerNorm -> SiLU, then a linear head."""

    width: int
    out: int
    head_scale: float

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.silu(nn.LayerNorm()(nn.Dense(self.width)(x)))
        head_init = nn.initializers.variance_scaling(self.head_scale, "fan_avg", "uniform")
        return nn.Dense(self.out, kernel_init=head_init)(x)


class ActorCritic(nn.Module):
    """obs [*B, *obs_shape] -> (dist [*B, A] logits or (mean, log_std) [*B, D], value [*B])."""

    action_dim: int
    discrete: bool
    obs_ndim: int
    width: int

    @nn.compact
    def __call__(self, obs, init_log_std=0.0):
        x = obs.reshape(*obs.shape[: obs.ndim - self.obs_ndim], -1)
        out = NormedMLP(self.width, self.action_dim, 0.01)(x)
        value = NormedMLP(self.width, 1, 1.0)(x)[..., 0]
        if self.discrete:
            return out, value
        log_std = self.param("log_std", lambda _, shape: jnp.full(shape, init_log_std, jnp.float32), (self.action_dim,))
        return (out, jnp.broadcast_to(log_std, out.shape)), value


class LayerNormPolicy:
    """The family object: the protocol's `init`, `initial_carry` and `apply` (feed-forward)."""

    def __init__(self, network: ActorCritic):
        self.network = network

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        return self.network.init(key, obs, init_log_std)

    def initial_carry(self, num: int) -> tuple:
        return ()

    def apply(self, params: Any, carry: tuple, obs: jax.Array, reset: Any = None):
        dist, value = self.network.apply(params, obs)
        return carry, dist, value


def make(config: Any, spec: Any) -> LayerNormPolicy:
    """The family for a run's config (`ln_width`) and its env's `EnvSpec`."""
    return LayerNormPolicy(ActorCritic(spec.action_dim, spec.discrete, len(spec.obs_shape), config.ln_width))


FAMILY = Family(
    "layernorm_mlp",
    make,
    fields=(Field("ln_width", 64, "layernorm_mlp: width of each hidden layer", low=1),),
)
