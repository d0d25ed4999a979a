"""ppo_jax: pure-functional Proximal Policy Optimization in JAX.

The names below are imported on first use (PEP 562), so `import ppo_jax` runs no JAX
computation: JAX options that must precede backend start-up (`jax_num_cpu_devices`,
`jax.distributed.initialize`) can still be set after importing the package.
"""

import importlib

_EXPORTS = {
    "stats": "ppo_jax.runtime.stats",
    "CheckpointError": "ppo_jax.runtime.checkpoint",
    "load": "ppo_jax.runtime.checkpoint",
    "save": "ppo_jax.runtime.checkpoint",
    "ConfigError": "ppo_jax.config",
    "Hyperparams": "ppo_jax.config",
    "PPOConfig": "ppo_jax.config",
    "default_config": "ppo_jax.config",
    "EnvSpec": "ppo_jax.envs",
    "env_spec": "ppo_jax.envs",
    "make_env": "ppo_jax.envs",
    "EvalResult": "ppo_jax.engine.evaluate",
    "Policy": "ppo_jax.engine.evaluate",
    "evaluate": "ppo_jax.engine.evaluate",
    "export_policy": "ppo_jax.engine.evaluate",
    "load_policy": "ppo_jax.engine.evaluate",
    "approx_kl_k3": "ppo_jax.core.losses",
    "clip_fraction": "ppo_jax.core.losses",
    "clipped_surrogate": "ppo_jax.core.losses",
    "explained_variance": "ppo_jax.core.losses",
    "gae": "ppo_jax.core.losses",
    "ppo_loss": "ppo_jax.core.losses",
    "value_loss": "ppo_jax.core.losses",
    "Actor": "ppo_jax.policies.mlp",
    "ActorCritic": "ppo_jax.policies.mlp",
    "Critic": "ppo_jax.policies.mlp",
    "Transition": "ppo_jax.engine.rollout",
    "rollout": "ppo_jax.engine.rollout",
    "SweepResult": "ppo_jax.runtime.sweeps",
    "sweep": "ppo_jax.runtime.sweeps",
    "TrainResult": "ppo_jax.engine.train",
    "TrainState": "ppo_jax.engine.train",
    "make_train": "ppo_jax.engine.train",
    "make_train_batch": "ppo_jax.engine.train",
}

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ppo_jax' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name == "stats" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
