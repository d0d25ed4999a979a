"""ppo_jax: pure-functional Proximal Policy Optimization in JAX."""

from ppo_jax import stats
from ppo_jax.checkpoint import CheckpointError, load, save
from ppo_jax.config import ConfigError, Hyperparams, PPOConfig, default_config
from ppo_jax.envs import EnvSpec, env_spec, make_env
from ppo_jax.evaluate import EvalResult, Policy, evaluate, export_policy, load_policy
from ppo_jax.losses import (
    approx_kl_k3,
    clip_fraction,
    clipped_surrogate,
    explained_variance,
    gae,
    ppo_loss,
    value_loss,
)
from ppo_jax.networks import Actor, ActorCritic, Critic
from ppo_jax.rollout import Transition, rollout
from ppo_jax.sweeps import SweepResult, sweep
from ppo_jax.train import TrainResult, TrainState, make_train, make_train_batch

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorCritic",
    "CheckpointError",
    "ConfigError",
    "Critic",
    "EnvSpec",
    "EvalResult",
    "Hyperparams",
    "PPOConfig",
    "Policy",
    "TrainResult",
    "TrainState",
    "SweepResult",
    "Transition",
    "approx_kl_k3",
    "clip_fraction",
    "clipped_surrogate",
    "default_config",
    "env_spec",
    "evaluate",
    "export_policy",
    "explained_variance",
    "gae",
    "load",
    "load_policy",
    "make_env",
    "make_train",
    "make_train_batch",
    "ppo_loss",
    "rollout",
    "save",
    "stats",
    "sweep",
    "value_loss",
]
