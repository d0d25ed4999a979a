"""Craftax and Craftax-Classic (`craftax/NAME`, package `craftax`).

Craftax ends an episode with one `done` for death (and, in Craftax, beating the final boss) and
for its time limit (`params.max_timesteps`, 10 000 steps). The adapter steps the env without
auto-reset and separates the two: `truncated` = the step count reached the limit, `terminated` =
the suite's own terminal check with the limit lifted. Symbolic observations are vectors, pixel
observations images [H, W, 3] (the `cnn` family).

World generation costs about 40 steps (119 resets/s against 5000 steps/s for 64 envs on a CPU),
and a rollout draws a reset for every step of every env; `reset_ratio` = 16 shares each drawn
reset among 16 envs, as the optimistic resets of Craftax's PPO baseline (ratio 16) do.
"""

from __future__ import annotations

from typing import Any

import jax
from craftax.craftax_env import make_craftax_env_from_name

from ppo_jax.envs.adapter import SuiteEnv, discrete_space, make_registered

NAMES = ("Craftax-Classic-Symbolic-v1", "Craftax-Classic-Pixels-v1", "Craftax-Symbolic-v1", "Craftax-Pixels-v1")
NO_LIMIT = 2**30


class CraftaxEnv(SuiteEnv):
    suite = "craftax"
    reset_ratio = 16

    def __init__(self, name: str, max_timesteps: int | None = None):
        self.inner_env = make_craftax_env_from_name(name, auto_reset=False)
        params = self.inner_env.default_params
        if max_timesteps is not None:
            params = params.replace(max_timesteps=int(max_timesteps))
        self.params = params
        self.unlimited = params.replace(max_timesteps=NO_LIMIT)
        space, _ = discrete_space(name, (int(self.inner_env.action_space(params).n),))
        super().__init__(name, int(params.max_timesteps), space)

    def suite_reset(self, key: jax.Array):
        obs, state = self.inner_env.reset_env(key, self.params)
        return state, obs

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        obs, state, reward, _, _ = self.inner_env.step_env(key, inner, action, self.params)
        terminated = self.inner_env.is_terminal(state, self.unlimited)
        truncated = state.timestep >= self.params.max_timesteps
        return state, obs, reward, terminated, truncated


def make(name: str, **kwargs: Any):
    """(env, params); kwargs: max_timesteps (the time limit, default the suite's 10 000)."""
    return make_registered("craftax", CraftaxEnv, name, NAMES, **kwargs)
