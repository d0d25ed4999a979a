"""ppo_jax: pure-functional Proximal Policy Optimization in JAX.

The names below are imported on first use (PEP 562), so `import ppo_jax` runs no JAX
computation: JAX options that must precede backend start-up (`jax_num_cpu_devices`,
`jax.distributed.initialize`) can still be set after importing the package.
"""

import importlib

_EXPORTS = {
    # errors
    "CheckpointError": "ppo_jax.errors",
    "ConfigError": "ppo_jax.errors",
    "NonFiniteError": "ppo_jax.errors",
    "RunFileError": "ppo_jax.errors",
    "RunStopped": "ppo_jax.errors",
    # configuration
    "Hyperparams": "ppo_jax.config",
    "PPOConfig": "ppo_jax.config",
    "default_config": "ppo_jax.config",
    "Field": "ppo_jax.fields",
    # the math (core)
    "approx_kl_k3": "ppo_jax.core.losses",
    "clip_fraction": "ppo_jax.core.losses",
    "clipped_surrogate": "ppo_jax.core.losses",
    "explained_variance": "ppo_jax.core.losses",
    "gae": "ppo_jax.core.losses",
    "ppo_loss": "ppo_jax.core.losses",
    "value_loss": "ppo_jax.core.losses",
    "OBJECTIVES": "ppo_jax.core.objectives",
    "Objective": "ppo_jax.core.objectives",
    # policies and environments
    "ActorCritic": "ppo_jax.policies.mlp",
    "Family": "ppo_jax.policies",
    "PolicyFamily": "ppo_jax.policies",
    "make_policy": "ppo_jax.engine.parts",
    "EnvSpec": "ppo_jax.envs",
    "env_spec": "ppo_jax.envs",
    "make_env": "ppo_jax.envs",
    # the training program (engine)
    "Transition": "ppo_jax.engine.rollout",
    "rollout": "ppo_jax.engine.rollout",
    "TrainResult": "ppo_jax.engine.train",
    "TrainState": "ppo_jax.engine.train",
    "make_train": "ppo_jax.engine.train",
    "make_train_batch": "ppo_jax.engine.train",
    "EvalResult": "ppo_jax.engine.evaluate",
    "evaluate": "ppo_jax.engine.evaluate",
    # the host side (runtime)
    "run": "ppo_jax.runtime.driver",
    "load": "ppo_jax.runtime.checkpoint",
    "save": "ppo_jax.runtime.checkpoint",
    "Policy": "ppo_jax.runtime.policy_file",
    "export_policy": "ppo_jax.runtime.policy_file",
    "load_policy": "ppo_jax.runtime.policy_file",
    "SweepResult": "ppo_jax.runtime.sweeps",
    "sweep": "ppo_jax.runtime.sweeps",
    "stats": "ppo_jax.runtime.stats",
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
