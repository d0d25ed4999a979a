"""The gymnax suite: environment ids as gymnax registers them (gymnax ≥ 1.0 interface)."""

from __future__ import annotations

import difflib
from typing import Any

import gymnax

from ppo_jax.errors import ConfigError


def make_env(name: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """(env, env_params) for a gymnax id; unknown ids raise `ConfigError` listing close matches."""
    if name not in gymnax.registered_envs:
        close = difflib.get_close_matches(name, gymnax.registered_envs, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            "env", f"unknown gymnax environment {name!r}; {hint}known: {', '.join(gymnax.registered_envs)}"
        )
    return gymnax.make(name, **env_kwargs)
