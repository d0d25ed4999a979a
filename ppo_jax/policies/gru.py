"""The `gru` policy family: a recurrent actor-critic for partially observed environments.

    x_t = act(W_e o_t + b_e)                                   (encoder, width hidden_sizes[0])
    r_t = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr)             (GRU, Cho et al. 2014; width rnn_size)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}
    π(·|h_t), V(h_t)                                           (MLP heads of widths hidden_sizes[1:])

h_{t−1} is reset to 0 where o_t starts an episode. Over a sequence (`unroll`) with `fast_paths`
on, the encoder and input gates run on all T steps at once and only h ↦ W_h h is scanned
(`fast_paths.gru_sequence`, with its own backward pass), so the update's time loop holds one
small matrix product per step; off, `apply` is scanned over time (`lax.scan`, JAX's gradient).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax import fast_paths
from ppo_jax.fields import Field
from ppo_jax.policies.base import Family, reset_carry
from ppo_jax.policies.init import HIDDEN_GAIN, actor_critic_gain, init_params, log_std_fill
from ppo_jax.policies.layers import ACTIVATIONS, Actor, Critic, dense, flatten_obs

GATE_GAIN = 1.0


class GRUActorCritic(nn.Module):
    """Encoder, GRU and separate actor and critic heads on the GRU state (see module docstring)."""

    action_dim: int
    discrete: bool
    obs_ndim: int = 1
    hidden_sizes: Sequence[int] = (64, 64)
    rnn_size: int = 128
    activation: str = "tanh"

    def setup(self):
        self.encoder = dense(self.hidden_sizes[0], HIDDEN_GAIN, "encoder")
        self.input_gates = dense(3 * self.rnn_size, GATE_GAIN, "input_gates")
        self.hidden_gates = dense(3 * self.rnn_size, GATE_GAIN, "hidden_gates")
        self.actor = Actor(self.action_dim, self.discrete, tuple(self.hidden_sizes[1:]), self.activation)
        self.critic = Critic(tuple(self.hidden_sizes[1:]), self.activation)

    def project(self, obs: jax.Array) -> jax.Array:
        """W_i x + b_i for every step: obs [*B, *obs_shape] -> [*B, 3·rnn_size]."""
        x = ACTIVATIONS[self.activation](self.encoder(flatten_obs(obs, self.obs_ndim)))
        return self.input_gates(x)

    def cell(self, h: jax.Array, xp: jax.Array) -> jax.Array:
        """One GRU step from h [*B, H] and the projected input xp [*B, 3H] -> h' [*B, H]."""
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        hr, hz, hn = jnp.split(self.hidden_gates(h), 3, axis=-1)
        r = nn.sigmoid(xr + hr)
        z = nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h

    def heads(self, h: jax.Array, init_log_std: float | jax.Array = 0.0):
        return self.actor(h, init_log_std), self.critic(h)

    def __call__(self, obs: jax.Array, h: jax.Array, init_log_std: float | jax.Array = 0.0):
        return self.heads(self.cell(h, self.project(obs)), init_log_std)


def _scan_step(policy: GRUPolicy, params: Any, h: jax.Array, xs):
    h, dist, value = policy.apply(params, h, *xs)
    return h, (dist, value)


def _gain(path: tuple[str, ...]) -> float:
    return GATE_GAIN if path[-2] in ("input_gates", "hidden_gates") else actor_critic_gain(path)


@dataclasses.dataclass(frozen=True)
class GRUPolicy:
    """The `gru` family (see the module docstring); the carry is h [N, rnn_size]."""

    network: GRUActorCritic
    kernel_init: str = "orthogonal"
    fast_paths: bool = True  # the config's switch (`ppo_jax.fast_paths`)

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        h = self.initial_carry(obs.shape[0])
        fill = log_std_fill(init_log_std)
        return init_params(self.network, key, (obs, h, init_log_std), _gain, fill, self.kernel_init, self.fast_paths)

    def initial_carry(self, num: int) -> jax.Array:
        return jnp.zeros((num, self.network.rnn_size), jnp.float32)

    def apply(self, params: Any, carry: jax.Array, obs: jax.Array, reset: jax.Array):
        h = reset_carry(self, carry, reset)
        h = self.network.apply(params, h, self.network.apply(params, obs, method="project"), method="cell")
        dist, value = self.network.apply(params, h, method="heads")
        return h, dist, value

    def unroll(self, params: Any, carry: jax.Array, obs: jax.Array, reset: jax.Array):
        """obs [T, N, ...], reset [T, N], carry [N, H] -> (dist, value) [T, N]. Fast paths: the
        inputs projected for all steps at once, the recurrence by `fast_paths.gru_sequence` (whose
        backward pass forms the recurrent weights' gradient in one product), the heads on all
        states at once. Plain: `lax.scan` of `apply` over the T steps."""
        if not self.fast_paths:
            return lax.scan(functools.partial(_scan_step, self, params), carry, (obs, reset))[1]
        xp = self.network.apply(params, obs, method="project")
        gates = params["params"]["hidden_gates"]
        hs = fast_paths.gru_sequence(gates["kernel"], gates["bias"], carry, xp, reset)
        return self.network.apply(params, hs, method="heads")

    def value(self, params: Any, carry: jax.Array, obs: jax.Array) -> jax.Array:
        h = self.network.apply(params, carry, self.network.apply(params, obs, method="project"), method="cell")
        return self.network.apply(params, h, method="heads")[1]

    def describe(self) -> dict[str, Any]:
        net = self.network
        return {
            "family": "gru",
            "action_dim": net.action_dim,
            "discrete": net.discrete,
            "obs_ndim": net.obs_ndim,
            "hidden_sizes": list(net.hidden_sizes),
            "rnn_size": net.rnn_size,
            "activation": net.activation,
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> GRUPolicy:
        keys = ("action_dim", "discrete", "obs_ndim", "hidden_sizes", "rnn_size", "activation")
        args = {k: tuple(desc[k]) if k == "hidden_sizes" else desc[k] for k in keys}
        return cls(GRUActorCritic(**args))


def make(config: Any, spec: Any) -> GRUPolicy:
    """The `gru` family for a config (hidden_sizes, rnn_size, activation, kernel_init, fast_paths) and an `EnvSpec`."""
    return GRUPolicy(
        GRUActorCritic(
            spec.action_dim,
            spec.discrete,
            len(spec.obs_shape),
            tuple(config.hidden_sizes),
            config.rnn_size,
            config.activation,
        ),
        config.kernel_init,
        config.fast_paths,
    )


FAMILY = Family(
    "gru",
    make,
    GRUPolicy.from_description,
    fields=(Field("rnn_size", 128, "gru: width of the recurrent state", low=1),),
)
