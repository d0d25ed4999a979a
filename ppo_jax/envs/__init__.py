"""Environments: gymnax lookup with clear errors, action-space description, and the running
statistics used for observation and reward normalisation (pure functions over named state).
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from ppo_jax.config import ConfigError

NORM_CLIP = 10.0


def make_env(name: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """(env, env_params) for a gymnax id; unknown ids raise `ConfigError` listing close matches."""
    if name not in gymnax.registered_envs:
        close = difflib.get_close_matches(name, gymnax.registered_envs, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            "env", f"unknown gymnax environment {name!r}; {hint}known: {', '.join(gymnax.registered_envs)}"
        )
    return gymnax.make(name, **env_kwargs)


class EnvSpec(NamedTuple):
    """Static description of an environment's spaces."""

    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int  # number of actions (Discrete) or action dimensions (Box)
    action_shape: tuple[int, ...]  # the shape the env expects for one action
    action_low: tuple[float, ...] | None  # Box bounds, broadcast to [action_dim] (tuples: hashable)
    action_high: tuple[float, ...] | None


def env_spec(env: Any, env_params: Any) -> EnvSpec:
    """Read the observation shape and action space; raise `ConfigError` for unsupported spaces.

    Traces `env.reset` abstractly (`jax.eval_shape`): nothing is compiled.
    """
    space = env.action_space(env_params)
    if not isinstance(space, (spaces.Discrete, spaces.Box)):
        raise ConfigError("env", f"action space {type(space).__name__} is not supported; allowed: Discrete, Box")
    if isinstance(space, spaces.Box) and len(tuple(space.shape)) > 1:
        raise ConfigError("env", f"Box action spaces must be 0- or 1-dimensional, got shape {tuple(space.shape)}")
    obs, _ = jax.eval_shape(lambda: env.reset(jax.random.key(0), env_params))
    obs_shape = tuple(obs.shape)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(obs_shape, True, int(space.n), (), None, None)
    shape = tuple(space.shape)
    dim = int(np.prod(shape)) if shape else 1
    low = tuple(np.broadcast_to(np.asarray(space.low, np.float32), (dim,)).tolist())
    high = tuple(np.broadcast_to(np.asarray(space.high, np.float32), (dim,)).tolist())
    return EnvSpec(obs_shape, False, dim, shape, low, high)


def env_action(action: jax.Array, spec: EnvSpec) -> jax.Array:
    """The action handed to the env: Box actions clipped to the bounds (reshaped to a scalar for
    0-d Box spaces); the unclipped action stays in the rollout buffer."""
    if spec.discrete:
        return action
    low = jnp.broadcast_to(jnp.asarray(spec.action_low, action.dtype), action.shape)
    high = jnp.broadcast_to(jnp.asarray(spec.action_high, action.dtype), action.shape)
    clipped = jnp.clip(action, low, high)
    return clipped.reshape(*action.shape[:-1], *spec.action_shape)


class RunningStats(NamedTuple):
    """Running mean and variance (parallel Welford / Chan et al.) over a leading batch axis."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_running_stats(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))


def update_running_stats(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merge a batch [B, *shape] into the stats (Chan et al. 1979 parallel update)."""
    b_mean = jnp.mean(batch, axis=0)
    b_var = jnp.var(batch, axis=0)
    b_count = jnp.float32(batch.shape[0])
    delta = b_mean - stats.mean
    total = stats.count + b_count
    mean = stats.mean + delta * (b_count / total)
    m2 = stats.var * stats.count + b_var * b_count + jnp.square(delta) * (stats.count * b_count / total)
    return RunningStats(mean, m2 / total, total)


def normalize(x: jax.Array, stats: RunningStats) -> jax.Array:
    """clip((x − μ) / √(σ² + 1e-8), ±10); x [..., *shape] with the stats' trailing `shape`."""
    mean = jnp.broadcast_to(stats.mean, x.shape)
    std = jnp.broadcast_to(jnp.sqrt(stats.var + 1e-8), x.shape)
    return jnp.clip((x - mean) / std, -NORM_CLIP, NORM_CLIP)


class RewardScaler(NamedTuple):
    """State of reward scaling by the running std of the discounted return (per env `ret`)."""

    ret: jax.Array  # [N] discounted return accumulated since each env's episode start
    stats: RunningStats  # running variance of `ret`


def scale_reward(
    scaler: RewardScaler, reward: jax.Array, done: jax.Array, gamma: jax.Array
) -> tuple[RewardScaler, jax.Array]:
    """ret ← γ·ret + r; r̃ = clip(r / √(Var[ret] + 1e-8), ±10); ret ← 0 where the episode ended.

    Shapes: reward, done [N]. Returns (new scaler, scaled reward [N]).
    """
    ret = scaler.ret * gamma + reward
    stats = update_running_stats(scaler.stats, ret)
    scaled = jnp.clip(reward / jnp.sqrt(stats.var + 1e-8), -NORM_CLIP, NORM_CLIP)
    return RewardScaler(jnp.where(done, 0.0, ret), stats), scaled
