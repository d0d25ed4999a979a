"""Brax's own environments (`brax/NAME`, or `brax/NAME@BACKEND`; package `brax`).

The adapter wraps the env in Brax's `EpisodeWrapper` (the one Brax's PPO trains with, 1000 steps,
action repeat 1) without its auto-reset, and reads the time limit from
`state.info["truncation"]`: `truncated` = the wrapper cut the episode, `terminated` = `done`
without truncation (e.g. Ant falling over). The physics backend is MJX unless the id names
another one the installed Brax has.
"""

from __future__ import annotations

from typing import Any

from brax import envs as brax_envs

from ppo_jax.envs.adapter import EpisodeWrappedEnv, box_space, unknown_name
from ppo_jax.errors import ConfigError

BACKENDS = ("mjx", "generalized", "positional", "spring")
DEFAULT_BACKEND = "mjx"
EPISODE_LENGTH = 1000  # Brax's `envs.create` and PPO training default


class BraxEnv(EpisodeWrappedEnv):
    suite = "brax"

    def __init__(self, name: str, backend: str, episode_length: int = EPISODE_LENGTH, **kwargs: Any):
        try:
            self.inner_env = brax_envs.create(
                name, episode_length=episode_length, action_repeat=1, auto_reset=False, backend=backend, **kwargs
            )
        except (ValueError, NotImplementedError, KeyError) as err:
            raise ConfigError("env", f"brax/{name}@{backend} cannot be made: {err}") from None
        space = box_space(-1.0, 1.0, (int(self.inner_env.action_size),))
        super().__init__(name, episode_length, space)
        self.backend = backend

    @property
    def name(self) -> str:
        return f"brax/{self.env_id}@{self.backend}"


def make(name: str, **kwargs: Any):
    """(env, params) for NAME or NAME@BACKEND; kwargs: episode_length and the env's own arguments."""
    name, _, backend = name.partition("@")
    backend = backend or DEFAULT_BACKEND
    known = tuple(brax_envs._envs)
    if name not in known:
        raise unknown_name("brax", name, known)
    if backend not in BACKENDS:
        raise ConfigError("env", f"unknown brax backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    env = BraxEnv(name, backend, **kwargs)
    return env, env.default_params
