"""XLand-MiniGrid (`xminigrid/NAME`, package `xminigrid`).

XLand-MiniGrid returns dm_env-style time steps: the last step of an episode has step type LAST,
with discount 0 when the goal was reached (terminated) and 1 when `max_steps` cut it
(truncated). The adapter steps without auto-reset and reads the flags from step type and
discount. Observations are the agent's view [V, V, 2] of tile and colour ids. XLand envs use
the ruleset in their default parameters unless `ruleset` is given.
"""

from __future__ import annotations

from typing import Any

import jax
import xminigrid
from xminigrid.types import StepType

from ppo_jax.envs.adapter import SuiteEnv, discrete_space, make_registered


class XMiniGridEnv(SuiteEnv):
    suite = "xminigrid"

    def __init__(self, name: str, **kwargs: Any):
        self.inner_env, self.params = xminigrid.make(name, **kwargs)
        space, _ = discrete_space(name, (int(self.inner_env.num_actions(self.params)),))
        super().__init__(name, int(self.params.max_steps), space)

    def suite_reset(self, key: jax.Array):
        timestep = self.inner_env.reset(self.params, key)
        return timestep, timestep.observation

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        timestep = self.inner_env.step(self.params, inner, action)
        last = timestep.step_type == StepType.LAST
        terminated = last & (timestep.discount == 0)
        truncated = last & (timestep.discount > 0)
        return timestep, timestep.observation, timestep.reward, terminated, truncated


def make(name: str, **kwargs: Any):
    """(env, params); kwargs replace fields of the suite's env params (e.g. max_steps)."""
    return make_registered("xminigrid", XMiniGridEnv, name, xminigrid.registered_environments(), **kwargs)
