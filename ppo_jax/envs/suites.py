"""Environment ids: `SUITE/NAME` picks a suite adapter by its prefix; a bare id is a gymnax id.

One registry (`SUITES`) maps each prefix to the module holding its adapter, the packages it
imports and the optional extra that installs them. A suite's module is imported only when one of
its envs is made, so a missing package is reported (as a `ConfigError` naming the extra) before
anything is traced or compiled.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, NamedTuple

from ppo_jax.errors import ConfigError


class Suite(NamedTuple):
    """A suite of environments behind one adapter module."""

    module: str  # ppo_jax.envs.<module> defines make(name, **kwargs) -> (env, env_params)
    packages: tuple[str, ...]  # top-level imports the adapter needs
    extra: str  # pip extra of ppo_jax that installs them
    about: str  # one line for help texts


SUITES: dict[str, Suite] = {
    "brax": Suite("brax_suite", ("brax",), "brax", "Brax's own envs (brax/ant; brax/ant@positional picks a backend)"),
    "playground": Suite("playground_suite", ("mujoco_playground",), "playground", "MuJoCo Playground"),
    "craftax": Suite("craftax_suite", ("craftax",), "craftax", "Craftax and Craftax-Classic"),
    "navix": Suite("navix_suite", ("navix",), "navix", "Navix (MiniGrid in JAX)"),
    "xminigrid": Suite("xminigrid_suite", ("xminigrid",), "xminigrid", "XLand-MiniGrid"),
    "jumanji": Suite("jumanji_suite", ("jumanji",), "jumanji", "Jumanji (legal-action masks applied)"),
}


def split_id(env_id: str) -> tuple[str | None, str]:
    """("suite", "NAME") for "suite/NAME"; (None, env_id) for a bare gymnax id."""
    prefix, sep, rest = env_id.partition("/")
    return (prefix, rest) if sep else (None, env_id)


def suite_module(prefix: str) -> Any:
    """The adapter module of a suite; `ConfigError` if the prefix is unknown or its packages are
    not installed."""
    if prefix not in SUITES:
        raise ConfigError("env", f"unknown suite {prefix!r}; allowed prefixes: {', '.join(SUITES)} (or a gymnax id)")
    suite = SUITES[prefix]
    missing = [p for p in suite.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(
            "env", f"{prefix}/ envs need {', '.join(missing)}: pip install 'ppo_jax[{suite.extra}]' (or [envs] for all)"
        )
    try:
        return importlib.import_module(f"ppo_jax.envs.{suite.module}")
    except ImportError as err:  # installed but broken (e.g. an incompatible version)
        raise ConfigError(
            "env", f"{prefix}/ envs could not be imported ({err}); reinstall with pip install 'ppo_jax[{suite.extra}]'"
        ) from None


def make_env(env_id: str, **env_kwargs: Any) -> tuple[Any, Any]:
    """(env, env_params) behind the gymnax ≥ 1.0 interface for `SUITE/NAME` or a gymnax id.
    `env_kwargs` go to the suite's own constructor (e.g. a shorter episode length)."""
    prefix, name = split_id(env_id)
    if prefix is None:
        from ppo_jax.envs.gymnax_suite import make_env as make_gymnax

        return make_gymnax(env_id, **env_kwargs)
    if not name:
        raise ConfigError("env", f"{env_id!r} names no environment; write {prefix}/NAME")
    return suite_module(prefix).make(name, **env_kwargs)
