"""The `mlp` policy family: separate actor and critic MLPs on the flattened observation (the
classic PPO network of Huang et al. 2022: orthogonal init, gains √2 / 0.01 / 1, zero biases,
a state-independent Gaussian log-std).

With `fast_paths` on, the rollout evaluates narrow networks through one packed MLP
(`fast_paths.fuse_actor_critic`): actor and critic side by side in block-diagonal layers, the same
function with half the kernels per step; off, through the separate actor and critic.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from ppo_jax import fast_paths
from ppo_jax.policies.base import Family
from ppo_jax.policies.init import actor_critic_gain, init_params, log_std_fill
from ppo_jax.policies.layers import ACTIVATIONS, Actor, Critic, flatten_obs


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

    def __call__(self, obs: jax.Array, init_log_std: float | jax.Array = 0.0) -> PolicyOutput:
        x = flatten_obs(obs, self.obs_ndim)
        return PolicyOutput(self.actor(x, init_log_std), self.critic(x))

    def value(self, obs: jax.Array) -> jax.Array:
        return self.critic(flatten_obs(obs, self.obs_ndim))


def init_actor_critic(
    network: ActorCritic,
    key: jax.Array,
    obs: jax.Array,
    init_log_std=0.0,
    kernel_init: str = "orthogonal",
    fast: bool = True,
) -> Any:
    """Parameters of `network` (`init.init_params`): kernels gain × Haar-orthogonal (or
    LeCun-normal with `kernel_init="lecun_normal"`), biases 0, `log_std` = init_log_std."""
    fill = log_std_fill(init_log_std)
    return init_params(network, key, (obs, init_log_std), actor_critic_gain, fill, kernel_init, fast)


def _fused_step(network: ActorCritic, fused: fast_paths.FusedActorCritic, carry, obs, reset):
    act = ACTIVATIONS[network.activation]
    x = flatten_obs(obs, network.obs_ndim)
    dist, value = fast_paths.fused_apply(fused, act, x, network.action_dim, network.discrete)
    return carry, dist, value


@dataclasses.dataclass(frozen=True)
class MLPPolicy:
    """The `mlp` family (see the module docstring); feed-forward, so its carry is `()`."""

    network: ActorCritic
    kernel_init: str = "orthogonal"
    fast_paths: bool = True  # the config's switch (`ppo_jax.fast_paths`)

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        return init_actor_critic(self.network, key, obs, init_log_std, self.kernel_init, self.fast_paths)

    def initial_carry(self, num: int) -> tuple:
        return ()

    def apply(self, params: Any, carry: tuple, obs: jax.Array, reset: Any = None):
        out = self.network.apply(params, obs)
        return carry, out.dist, out.value

    def value(self, params: Any, carry: tuple, obs: jax.Array) -> jax.Array:
        return self.network.apply(params, obs, method=ActorCritic.value)

    def rollout_apply(self, params: Any):
        """With fast paths, the packed network for narrow layers (`fast_paths.FUSE_MAX_WIDTH`);
        else `apply`."""
        if self.fast_paths and max(self.network.hidden_sizes, default=0) <= fast_paths.FUSE_MAX_WIDTH:
            return functools.partial(_fused_step, self.network, fast_paths.fuse_actor_critic(params))
        return functools.partial(self.apply, params)

    def describe(self) -> dict[str, Any]:
        net = self.network
        return {
            "family": "mlp",
            "action_dim": net.action_dim,
            "discrete": net.discrete,
            "obs_ndim": net.obs_ndim,
            "hidden_sizes": list(net.hidden_sizes),
            "activation": net.activation,
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> MLPPolicy:
        return cls(
            ActorCritic(
                desc["action_dim"], desc["discrete"], desc["obs_ndim"], tuple(desc["hidden_sizes"]), desc["activation"]
            )
        )


def make(config: Any, spec: Any) -> MLPPolicy:
    """The `mlp` family for a config (hidden_sizes, activation, kernel_init, fast_paths) and an `EnvSpec`."""
    return MLPPolicy(
        ActorCritic(spec.action_dim, spec.discrete, len(spec.obs_shape), tuple(config.hidden_sizes), config.activation),
        config.kernel_init,
        config.fast_paths,
    )


FAMILY = Family("mlp", make, MLPPolicy.from_description)
