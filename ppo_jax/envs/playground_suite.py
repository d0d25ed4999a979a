"""MuJoCo Playground (`playground/NAME`, package `playground`, imported as `mujoco_playground`).

Playground envs have Brax's reset/step signature and are trained with Brax's `EpisodeWrapper`
(`mujoco_playground.wrapper.wrap_for_brax_training`); the adapter uses the same wrapper, with
the env's own `episode_length` from its default config, without auto-reset, and reads
`state.info["truncation"]` as Brax's adapter does. Dict observations give the policy their
"state" entry (Playground's actor input), or all entries flattened. Envs whose default config
uses MJX's Warp implementation are made with its JAX implementation (`impl="jax"`) unless
`impl` is given: Warp's `Data` cannot be selected leaf by leaf, as auto-reset does.
"""

from __future__ import annotations

from typing import Any

from brax.envs.wrappers import training as brax_training
from mujoco_playground import registry

from ppo_jax.envs.adapter import EpisodeWrappedEnv, box_space, make_registered


class PlaygroundEnv(EpisodeWrappedEnv):
    suite = "playground"

    def __init__(self, name: str, episode_length: int | None = None, **overrides: Any):
        config = registry.get_default_config(name)
        length = int(episode_length or config.episode_length)
        if config.get("impl") == "warp" and "impl" not in overrides:
            overrides = {**overrides, "impl": "jax"}
        inner = registry.load(name, config_overrides=overrides or None)
        self.inner_env = brax_training.EpisodeWrapper(inner, length, 1)
        super().__init__(name, length, box_space(-1.0, 1.0, (int(inner.action_size),)))


def make(name: str, **kwargs: Any):
    """(env, params); kwargs: episode_length, and overrides of the env's default config."""
    return make_registered("playground", PlaygroundEnv, name, registry.ALL_ENVS, **kwargs)
