"""Navix, MiniGrid in JAX (`navix/NAME`, package `navix`).

Navix marks each step with a step type (0 transition, 1 truncation at `max_steps`, 2
termination); the adapter calls its step without auto-reset (`Environment._step`) and reads the
flags from it. The episode length is what `navix.make` gives (100 steps unless given).
Observations are Navix's own (by default a symbolic grid [H, W, 3]: `mlp` flattens it, `cnn` takes
it as an image).
"""

from __future__ import annotations

from typing import Any

import jax
import navix
from navix.environments.environment import StepType

from ppo_jax.envs.adapter import SuiteEnv, discrete_space, make_registered


class NavixEnv(SuiteEnv):
    suite = "navix"

    def __init__(self, name: str, **kwargs: Any):
        self.inner_env = navix.make(name, **kwargs)
        space = self.inner_env.action_space
        space, _ = discrete_space(name, (int(space.maximum) - int(space.minimum) + 1,))
        super().__init__(name, int(self.inner_env.max_steps), space)

    def suite_reset(self, key: jax.Array):
        timestep = self.inner_env.reset(key)
        return timestep, timestep.observation

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        timestep = self.inner_env._step(inner, action)
        terminated = timestep.step_type == StepType.TERMINATION
        truncated = timestep.step_type == StepType.TRUNCATION
        return timestep, timestep.observation, timestep.reward, terminated, truncated


def make(name: str, **kwargs: Any):
    """(env, params); kwargs go to `navix.make` (e.g. max_steps, observation_fn)."""
    return make_registered("navix", NavixEnv, name, navix.registry(), **kwargs)
