"""The gymnax suite: environment ids as gymnax registers them (gymnax ≥ 1.0 interface), and the
partially observed ones ppo_jax adds on top of gymnax (`envs.memory`)."""

from __future__ import annotations

import difflib
from typing import Any

from ppo_jax.envs.deferred import gymnax  # first: gymnax without its renderers' imports
from ppo_jax.envs.memory import REGISTERED
from ppo_jax.errors import ConfigError


def known_ids() -> list[str]:
    return [*gymnax.registered_envs, *REGISTERED]


def make_env(name: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """(env, env_params) for a gymnax id or one of ppo_jax's own (`envs.memory`); unknown ids raise
    `ConfigError` listing close matches."""
    if name in REGISTERED:
        env = REGISTERED[name](**env_kwargs)
        return env, env.default_params
    if name not in gymnax.registered_envs:
        close = difflib.get_close_matches(name, known_ids(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError("env", f"unknown gymnax environment {name!r}; {hint}known: {', '.join(known_ids())}")
    return gymnax.make(name, **env_kwargs)
