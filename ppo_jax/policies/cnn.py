"""The `cnn` policy family: for image observations [H, W, C] (MinAtar's 10×10×C grids), actor
and critic each a small convolutional torso (3×3 kernels, stride 1, no padding, as in the MinAtar
paper's network, Young & Tian 2019) followed by an MLP head. Feed-forward: the carry is `()`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax import fast_paths
from ppo_jax.errors import ConfigError
from ppo_jax.fields import Field
from ppo_jax.policies.base import Family
from ppo_jax.policies.init import HIDDEN_GAIN, actor_critic_gain, init_params, log_std_fill
from ppo_jax.policies.layers import ACTIVATIONS, Actor, Critic

KERNEL = (3, 3)


class ConvTorso(nn.Module):
    """Conv layers of `channels` filters (3×3, stride 1, VALID) with `activation`, flattened."""

    channels: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, features in enumerate(self.channels):
            init = fast_paths.orthogonal(HIDDEN_GAIN)
            conv = nn.Conv(features, KERNEL, padding="VALID", kernel_init=init, name=f"conv_{i}")
            x = act(conv(x))
        return x.reshape(x.shape[0], -1)


class ConvActorCritic(nn.Module):
    """Separate conv torsos and MLP heads for actor and critic; obs [*B, H, W, C]."""

    action_dim: int
    discrete: bool
    channels: Sequence[int] = (16,)
    hidden_sizes: Sequence[int] = (128,)
    activation: str = "relu"

    def setup(self):
        self.actor_torso = ConvTorso(self.channels, self.activation)
        self.critic_torso = ConvTorso(self.channels, self.activation)
        self.actor = Actor(self.action_dim, self.discrete, self.hidden_sizes, self.activation)
        self.critic = Critic(self.hidden_sizes, self.activation)

    def __call__(self, obs: jax.Array, init_log_std: float | jax.Array = 0.0):
        batch = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).astype(jnp.float32)
        dist = self.actor(self.actor_torso(x), init_log_std)
        value = self.critic(self.critic_torso(x))
        unflat = lambda y: y.reshape(*batch, *y.shape[1:])  # noqa: E731
        return jax.tree.map(unflat, dist), unflat(value)


@dataclasses.dataclass(frozen=True)
class CNNPolicy:
    """The `cnn` family (see the module docstring)."""

    network: ConvActorCritic
    kernel_init: str = "orthogonal"
    fast_paths: bool = True  # the config's switch (`ppo_jax.fast_paths`)

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        fill = log_std_fill(init_log_std)
        args = (obs, init_log_std)
        return init_params(self.network, key, args, actor_critic_gain, fill, self.kernel_init, self.fast_paths)

    def initial_carry(self, num: int) -> tuple:
        return ()

    def apply(self, params: Any, carry: tuple, obs: jax.Array, reset: Any = None):
        dist, value = self.network.apply(params, obs)
        return carry, dist, value

    def describe(self) -> dict[str, Any]:
        net = self.network
        return {
            "family": "cnn",
            "action_dim": net.action_dim,
            "discrete": net.discrete,
            "channels": list(net.channels),
            "hidden_sizes": list(net.hidden_sizes),
            "activation": net.activation,
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> CNNPolicy:
        return cls(
            ConvActorCritic(
                desc["action_dim"],
                desc["discrete"],
                tuple(desc["channels"]),
                tuple(desc["hidden_sizes"]),
                desc["activation"],
            )
        )


def make(config: Any, spec: Any) -> CNNPolicy:
    """The `cnn` family for a config (conv_channels, hidden_sizes, activation, kernel_init,
    fast_paths) and an `EnvSpec`; `ConfigError` unless the observations are images [H, W, C]
    large enough for the kernels."""
    shape = tuple(spec.obs_shape)
    shrink = len(config.conv_channels) * (KERNEL[0] - 1)
    if len(shape) != 3 or min(shape[:2]) <= shrink:
        raise ConfigError(
            "network",
            f"cnn needs image observations [H, W, C] larger than {shrink}×{shrink}, got shape {shape}; "
            "use --network mlp",
        )
    return CNNPolicy(
        ConvActorCritic(
            spec.action_dim, spec.discrete, tuple(config.conv_channels), tuple(config.hidden_sizes), config.activation
        ),
        config.kernel_init,
        config.fast_paths,
    )


FAMILY = Family(
    "cnn",
    make,
    CNNPolicy.from_description,
    fields=(Field("conv_channels", (16,), "cnn: filters of each 3x3 convolution layer", low=1),),
)
