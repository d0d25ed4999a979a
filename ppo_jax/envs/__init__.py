"""Environments: the suites ppo_jax trains on, behind the gymnax ≥ 1.0 interface.

`make_env(name)` resolves an id (a gymnax id, or `SUITE/NAME` for the suites in `suites.SUITES`)
to (env, env_params); `env_spec` reads the spaces once;
`normalization` holds the running observation statistics and reward scaling.
"""

from __future__ import annotations

from ppo_jax.envs import gymnax_suite  # noqa: F401  (first: gymnax without its renderers' imports)
from ppo_jax.envs.normalization import (
    NORM_CLIP,
    RewardScaler,
    RunningStats,
    init_running_stats,
    normalize,
    scale_reward,
    update_running_stats,
)
from ppo_jax.envs.spec import EnvSpec, action_distribution, env_action, env_spec
from ppo_jax.envs.suites import SUITES, make_env

__all__ = [
    "NORM_CLIP",
    "EnvSpec",
    "RewardScaler",
    "RunningStats",
    "SUITES",
    "action_distribution",
    "env_action",
    "env_spec",
    "init_running_stats",
    "make_env",
    "normalize",
    "scale_reward",
    "update_running_stats",
]
