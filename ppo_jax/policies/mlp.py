"""The `mlp` policy family: separate actor and critic MLPs on the flattened observation (the
classic PPO network of Huang et al. 2022: orthogonal init, gains √2 / 0.01 / 1, zero biases,
a state-independent Gaussian log-std).

The rollout evaluates narrow networks through one packed MLP (`fuse_actor_critic`): actor and
critic side by side in block-diagonal layers, the same function with half the kernels per step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax.policies.base import Family
from ppo_jax.policies.init import actor_critic_gain, init_in_one_draw, log_std_fill
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
    network: ActorCritic, key: jax.Array, obs: jax.Array, init_log_std=0.0, kernel_init: str = "orthogonal"
) -> Any:
    """Parameters distributed as `network.init(key, obs, init_log_std)`'s, drawn faster to compile
    (`init.init_in_one_draw`): kernels gain × Haar-orthogonal (or LeCun-normal with
    `kernel_init="lecun_normal"`), biases 0, `log_std` = init_log_std."""
    fill = log_std_fill(init_log_std)
    return init_in_one_draw(network, key, (obs, init_log_std), actor_critic_gain, fill, kernel_init)


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
    act = ACTIVATIONS[network.activation]
    x = flatten_obs(obs, network.obs_ndim)
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


# Widest hidden layer for which the rollout packs actor and critic into one block-diagonal MLP:
# with few envs a step is bound by the number of kernels (packing halves it); with wide layers it
# is bound by FLOPs, which the zero blocks would double.
FUSE_MAX_WIDTH = 128


def _fused_step(network: ActorCritic, fused: FusedActorCritic, carry, obs, reset):
    out = fused_apply(network, fused, obs)
    return carry, out.dist, out.value


@dataclasses.dataclass(frozen=True)
class MLPPolicy:
    """The `mlp` family (see the module docstring); feed-forward, so its carry is `()`."""

    network: ActorCritic
    kernel_init: str = "orthogonal"

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        return init_actor_critic(self.network, key, obs, init_log_std, self.kernel_init)

    def initial_carry(self, num: int) -> tuple:
        return ()

    def apply(self, params: Any, carry: tuple, obs: jax.Array, reset: Any = None):
        out = self.network.apply(params, obs)
        return carry, out.dist, out.value

    def value(self, params: Any, carry: tuple, obs: jax.Array) -> jax.Array:
        return self.network.apply(params, obs, method=ActorCritic.value)

    def rollout_apply(self, params: Any):
        """The packed network for narrow layers (see `FUSE_MAX_WIDTH`), else plain `apply`."""
        if max(self.network.hidden_sizes, default=0) <= FUSE_MAX_WIDTH:
            return functools.partial(_fused_step, self.network, fuse_actor_critic(params))
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
    """The `mlp` family for a config (hidden_sizes, activation, kernel_init) and an `EnvSpec`."""
    return MLPPolicy(
        ActorCritic(spec.action_dim, spec.discrete, len(spec.obs_shape), tuple(config.hidden_sizes), config.activation),
        config.kernel_init,
    )


FAMILY = Family("mlp", make, MLPPolicy.from_description)
