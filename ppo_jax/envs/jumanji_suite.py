"""Jumanji (`jumanji/NAME`, package `jumanji`).

Jumanji's time steps are dm_env-style: LAST with discount 0 is a termination, LAST with a
non-zero discount a truncation. Many Jumanji envs (Snake, Maze, Sokoban, ...) end at their own
`time_limit` with discount 0 as well; for an env with a `time_limit` and a `step_count` in its
state, the adapter reports reaching the limit as a truncation (a terminal event on that very step
is then reported as a truncation too: the state does not tell them apart). An env without a time limit (Game2048,
Minesweeper, ...) ends by itself; evaluation plays it for up to `UNLIMITED_EVAL_STEPS` steps (2048 played well
runs past a thousand moves). Observations are named tuples; the
adapter flattens every field except `action_mask` into one vector and appends the mask, so that
the policy's Categorical logits are masked to the legal actions (`legal_action_mask_size`).
Discrete actions map to Discrete, multi-discrete ones (e.g. Minesweeper's row and column) to one
Discrete over their product, bounded arrays to Box.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jumanji
from gymnax.environments import spaces
from jumanji import specs
from jumanji.types import StepType

from ppo_jax.envs.adapter import SuiteEnv, box_space, discrete_space, flatten_leaves, make_registered
from ppo_jax.errors import ConfigError

# the evaluation's step limit (gymnax `max_steps_in_episode`) for an env without a time limit of its own
UNLIMITED_EVAL_STEPS = 10_000


def _action_space(name: str, spec: Any):
    """(gymnax space, multi-discrete sizes or None) for a Jumanji action spec."""
    if isinstance(spec, specs.DiscreteArray):
        return discrete_space(name, (int(spec.num_values),))
    if isinstance(spec, specs.MultiDiscreteArray):
        return discrete_space(name, tuple(int(n) for n in jnp.ravel(spec.num_values)))
    if isinstance(spec, specs.BoundedArray) and jnp.issubdtype(spec.dtype, jnp.floating):
        return box_space(spec.minimum, spec.maximum, tuple(spec.shape)), None
    raise ConfigError(
        "env", f"{name}: action spec {type(spec).__name__} is not supported; allowed: Discrete, MultiDiscrete, Box"
    )


def _key(entry: Any) -> Any:
    """The field name or dict key of a pytree path entry."""
    return getattr(entry, "name", getattr(entry, "key", None))


class JumanjiEnv(SuiteEnv):
    suite = "jumanji"

    def __init__(self, name: str, **kwargs: Any):
        self.inner_env = jumanji.make(name, **kwargs)
        space, nvec = _action_space(name, self.inner_env.action_spec)
        _, timestep = jax.eval_shape(self.inner_env.reset, jax.random.key(0))
        mask = getattr(timestep.observation, "action_mask", None)
        joint = int(space.n) if isinstance(space, spaces.Discrete) else 0
        # a mask of one entry per joint action masks the logits; any other mask is a feature
        self.masked = mask is not None and joint > 0 and math.prod(mask.shape) == joint
        limit = getattr(self.inner_env, "time_limit", None)
        state, _ = jax.eval_shape(self.inner_env.reset, jax.random.key(0))
        self.time_limit = int(limit) if limit and hasattr(state, "step_count") else None
        length = int(limit) if limit else UNLIMITED_EVAL_STEPS
        super().__init__(name, length, space, nvec, joint if self.masked else 0)

    def encode_obs(self, raw: Any) -> jax.Array:
        if not self.masked:
            return flatten_leaves(jax.tree.leaves(raw))
        leaves = jax.tree_util.tree_leaves_with_path(raw)
        features = flatten_leaves(x for path, x in leaves if _key(path[0]) != "action_mask")
        return jnp.concatenate([features, jnp.ravel(raw.action_mask).astype(jnp.float32)])

    def suite_reset(self, key: jax.Array):
        state, timestep = self.inner_env.reset(key)
        return state, timestep.observation

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        state, timestep = self.inner_env.step(inner, action)
        last = timestep.step_type == StepType.LAST
        truncated = last & (timestep.discount > 0)
        if self.time_limit is not None:
            truncated = truncated | (last & (state.step_count >= self.time_limit))
        terminated = last & (timestep.discount == 0) & ~truncated
        return state, timestep.observation, timestep.reward, terminated, truncated


def make(name: str, **kwargs: Any):
    """(env, params); kwargs go to `jumanji.make` (e.g. time_limit for Snake)."""
    return make_registered("jumanji", JumanjiEnv, name, jumanji.registered_environments(), **kwargs)
