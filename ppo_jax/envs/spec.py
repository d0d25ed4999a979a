"""What the training program needs to know about an environment's spaces, read once."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from ppo_jax.core.distributions import Categorical, DiagGaussian
from ppo_jax.errors import ConfigError


class EnvSpec(NamedTuple):
    """Static description of an environment's spaces."""

    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int  # number of actions (Discrete) or action dimensions (Box)
    action_shape: tuple[int, ...]  # the shape the env expects for one action
    action_low: tuple[float, ...] | None  # Box bounds, broadcast to [action_dim] (tuples: hashable)
    action_high: tuple[float, ...] | None
    mask_size: int = 0  # trailing observation entries that are the legal-action mask (Discrete)


def env_spec(env: Any, env_params: Any) -> EnvSpec:
    """Read the observation shape and action space; raise `ConfigError` for unsupported spaces.

    Traces `env.reset` abstractly (`jax.eval_shape`): nothing is compiled. An env with a
    `legal_action_mask_size` attribute (the suite adapters) appends that many mask entries to
    its flat observations.
    """
    space = env.action_space(env_params)
    if not isinstance(space, (spaces.Discrete, spaces.Box)):
        raise ConfigError("env", f"action space {type(space).__name__} is not supported; allowed: Discrete, Box")
    if isinstance(space, spaces.Box) and len(tuple(space.shape)) > 1:
        raise ConfigError("env", f"Box action spaces must be 0- or 1-dimensional, got shape {tuple(space.shape)}")
    obs, _ = jax.eval_shape(lambda: env.reset(jax.random.key(0), env_params))
    obs_shape = tuple(obs.shape)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(obs_shape, True, int(space.n), (), None, None, int(getattr(env, "legal_action_mask_size", 0)))
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


def action_distribution(spec: EnvSpec, fast_paths: bool = True) -> Categorical | DiagGaussian:
    """The policy's action distribution for an env: Categorical for Discrete, DiagGaussian for Box
    (`fast_paths`: the config's switch, `ppo_jax.fast_paths`)."""
    return Categorical(spec.action_dim, fast_paths) if spec.discrete else DiagGaussian(spec.action_dim)
