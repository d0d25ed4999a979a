"""Partially observed environments registered by ppo_jax, for recurrent policies.

`StatelessCartPole-v1`: CartPole-v1 (gymnax) observing only the cart position x and the pole
angle θ; the velocities must be inferred from the history, as in POPGym's stateless CartPole
(Morad et al. 2023). A feed-forward policy sees a Markov-incomplete state; a recurrent one can
recover ẋ and θ̇ from consecutive observations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from gymnax.environments import spaces
from gymnax.environments.classic_control.cartpole import CartPole


class StatelessCartPole(CartPole):
    """CartPole-v1 with observations [x, θ] (the velocities removed)."""

    def __init__(self):
        super().__init__()
        self.obs_shape = (2,)

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return jnp.array([state.x, state.theta])

    @property
    def name(self) -> str:
        return "StatelessCartPole-v1"

    def observation_space(self, params) -> spaces.Box:
        high = jnp.array([params.x_threshold * 2, params.theta_threshold_radians * 2], jnp.float32)
        return spaces.Box(-high, high, (2,), jnp.float32)


# ppo_jax's own environments: id -> class (constructed with no arguments; default params)
REGISTERED = {"StatelessCartPole-v1": StatelessCartPole}
