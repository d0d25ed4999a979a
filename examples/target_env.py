"""A hand-written gymnax environment with a time limit: a point on [−1, 1] steers toward a
target. Written against gymnax's `Environment` interface (reset_env, step_env, spaces); gymnax's
own `step` adds the auto-reset and `info["final_observation"]`.

    obs = (x, goal)       actions: 0 left, 1 stay, 2 right (x moves by 0.1, clipped to [−1, 1])
    reward = 1 − |x − goal| / 2 per step; no terminal state: every episode is cut by the time
    limit, so the return to learn is the bootstrapped, not the truncated, one.

`make` is the factory `--env examples.target_env:make` names; its `episode_length` is a static
field of the env (a flag once the env is named).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from ppo_jax.fields import Field

STEP = 0.1


@struct.dataclass
class TargetState(environment.EnvState):
    x: jax.Array
    goal: jax.Array


@struct.dataclass
class TargetParams(environment.EnvParams):
    max_steps_in_episode: int = 50


class TargetEnv(environment.Environment):
    """See the module docstring."""

    @property
    def default_params(self) -> TargetParams:
        return TargetParams()

    def reset_env(self, key, params):
        kx, kg = jax.random.split(key)
        x = jax.random.uniform(kx, (), minval=-1.0, maxval=1.0)
        goal = jax.random.uniform(kg, (), minval=-1.0, maxval=1.0)
        state = TargetState(time=0, x=x, goal=goal)
        return self.get_obs(state), state

    def step_env(self, key, state, action, params):
        x = jnp.clip(state.x + STEP * (action - 1), -1.0, 1.0)
        reward = 1.0 - jnp.abs(x - state.goal) / 2.0
        state = TargetState(time=state.time + 1, x=x, goal=state.goal)
        return self.get_obs(state), state, reward, jnp.bool_(False), {}

    def get_obs(self, state, params=None, key=None):
        return jnp.stack([state.x, state.goal]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(3)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    @property
    def name(self) -> str:
        return "Target-v0"

    @property
    def num_actions(self) -> int:
        return 3


def make(episode_length: int = 50):
    """(env, env_params) with episodes cut after `episode_length` steps."""
    return TargetEnv(), TargetParams(max_steps_in_episode=episode_length)


make.fields = (Field("episode_length", 50, "target_env: steps before the time limit cuts an episode", low=1),)
