"""ppo_jax: pure-functional Proximal Policy Optimization in JAX.

The names below are imported on first use (PEP 562), so `import ppo_jax` runs no JAX
computation: JAX options that must precede backend start-up (`jax_num_cpu_devices`,
`jax.distributed.initialize`) can still be set after importing the package.
"""

import importlib

_EXPORTS = {
    "stats": "ppo_jax.stats",
    "CheckpointError": "ppo_jax.checkpoint",
    "load": "ppo_jax.checkpoint",
    "save": "ppo_jax.checkpoint",
    "ConfigError": "ppo_jax.config",
    "Hyperparams": "ppo_jax.config",
    "PPOConfig": "ppo_jax.config",
    "default_config": "ppo_jax.config",
    "EnvSpec": "ppo_jax.envs",
    "env_spec": "ppo_jax.envs",
    "make_env": "ppo_jax.envs",
    "EvalResult": "ppo_jax.evaluate",
    "Policy": "ppo_jax.evaluate",
    "evaluate": "ppo_jax.evaluate",
    "export_policy": "ppo_jax.evaluate",
    "load_policy": "ppo_jax.evaluate",
    "approx_kl_k3": "ppo_jax.losses",
    "clip_fraction": "ppo_jax.losses",
    "clipped_surrogate": "ppo_jax.losses",
    "explained_variance": "ppo_jax.losses",
    "gae": "ppo_jax.losses",
    "ppo_loss": "ppo_jax.losses",
    "value_loss": "ppo_jax.losses",
    "Actor": "ppo_jax.networks",
    "ActorCritic": "ppo_jax.networks",
    "Critic": "ppo_jax.networks",
    "Transition": "ppo_jax.rollout",
    "rollout": "ppo_jax.rollout",
    "SweepResult": "ppo_jax.sweeps",
    "sweep": "ppo_jax.sweeps",
    "TrainResult": "ppo_jax.train",
    "TrainState": "ppo_jax.train",
    "make_train": "ppo_jax.train",
    "make_train_batch": "ppo_jax.train",
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
