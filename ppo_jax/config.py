"""Configuration: static `PPOConfig`, traced `Hyperparams`, validation, and `default_config` (the
shipped per-env settings it reads are in `env_defaults`).

`PPOConfig` is one flat, frozen dataclass so that every field is a CLI flag and a keyword.
Each field carries metadata: `help` (one line) and `traced` (True for the scalar
hyperparameters that `jax.vmap` may map over). Fields that set an array shape or a Python
branch are static; changing them means compiling a new program.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import struct

from ppo_jax.core.objectives import OBJECTIVES
from ppo_jax.env_defaults import ENV_DEFAULTS
from ppo_jax.errors import CheckpointError, ConfigError  # noqa: F401  (re-exported)
from ppo_jax.policies import FAMILIES
from ppo_jax.policies.init import KERNEL_INITS as _KERNEL_INITS
from ppo_jax.policies.layers import ACTIVATIONS as _ACTIVATION_FUNCTIONS


def _static(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "traced": False})


def _traced(default: float, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "traced": True})


ACTIVATIONS = tuple(_ACTIVATION_FUNCTIONS)
NETWORKS = tuple(FAMILIES)
OBJECTIVE_NAMES = tuple(OBJECTIVES)
KERNEL_INITS = tuple(_KERNEL_INITS)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything that defines a PPO run. Frozen; derived sizes are properties."""

    env: str = _static("CartPole-v1", "gymnax id, or SUITE/NAME (brax, playground, craftax, navix, xminigrid, jumanji)")
    num_envs: int = _static(4, "parallel environments per seed")
    num_steps: int = _static(128, "rollout length per environment per update")
    num_epochs: int = _static(4, "passes over each rollout batch")
    num_minibatches: int = _static(4, "minibatches per epoch")
    total_timesteps: int = _static(500_000, "environment steps per seed")
    network: str = _static("mlp", f"policy family, one of {', '.join(NETWORKS)}")
    hidden_sizes: tuple[int, ...] = _static((64, 64), "hidden layer widths of actor and critic (gru: encoder, heads)")
    rnn_size: int = _static(128, "gru: width of the recurrent state")
    conv_channels: tuple[int, ...] = _static((16,), "cnn: filters of each 3x3 convolution layer")
    activation: str = _static("tanh", f"hidden activation, one of {', '.join(ACTIVATIONS)}")
    kernel_init: str = _static("orthogonal", f"weight initialisation, one of {', '.join(KERNEL_INITS)}")
    anneal_lr: bool = _static(True, "decay the learning rate linearly to 0")
    clip_value_loss: bool = _static(True, "clip the value update to ±clip_eps around the old value")
    normalize_advantages: bool = _static(True, "normalise advantages per minibatch")
    normalize_obs: bool = _static(False, "running observation normalisation (clip ±10)")
    normalize_reward: bool = _static(False, "scale rewards by the running std of the return")
    objective: str = _static("clip", f"policy objective, one of {', '.join(OBJECTIVE_NAMES)}")
    reinforce_baseline: bool = _static(False, "reinforce: subtract a learned V(s) baseline")
    seed: int = _static(0, "random seed (seeds are seed, seed+1, ...)")
    lr: float = _traced(2.5e-4, "Adam learning rate (initial value when annealed)")
    gamma: float = _traced(0.99, "discount factor in [0, 1]")
    gae_lambda: float = _traced(0.95, "GAE lambda in [0, 1]")
    clip_eps: float = _traced(0.2, "PPO ratio clip range epsilon (> 0)")
    ent_coef: float = _traced(0.01, "entropy bonus coefficient (>= 0)")
    vf_coef: float = _traced(0.5, "value loss coefficient (>= 0)")
    max_grad_norm: float = _traced(0.5, "global gradient-norm clip (> 0)")
    adam_eps: float = _traced(1e-5, "Adam epsilon (> 0): 1e-5 as in Huang et al. 2022, optax's default is 1e-8")
    init_log_std: float = _traced(0.0, "initial log-std of the Gaussian policy (continuous)")
    kl_coef: float = _traced(1.0, "kl_penalty: initial KL coefficient beta (adapted every update)")
    kl_target: float = _traced(0.01, "kl_penalty: target KL per update (> 0)")
    max_kl: float = _traced(0.01, "trpo: trust-region radius delta on the mean KL per update (> 0)")

    def __post_init__(self):
        validate(self)

    @property
    def batch_size(self) -> int:
        """Transitions per update: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates per seed: total_timesteps // batch_size (the remainder is not run)."""
        return self.total_timesteps // self.batch_size

    @property
    def env_steps(self) -> int:
        """Environment steps actually taken per seed."""
        return self.num_updates * self.batch_size

    def hyperparams(self) -> Hyperparams:
        """The traced fields as a `Hyperparams` pytree of float32 scalars (NumPy: building it runs
        no JAX computation; jit takes them as arguments)."""
        return Hyperparams(**{n: np.float32(getattr(self, n)) for n in TRACED_FIELDS})

    def replace(self, **changes: Any) -> PPOConfig:
        """A new, validated config with `changes` applied."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@struct.dataclass
class Hyperparams:
    """Traced scalar hyperparameters: a pytree that `jax.vmap` can map over."""

    lr: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_eps: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array
    adam_eps: jax.Array
    init_log_std: jax.Array
    kl_coef: jax.Array
    kl_target: jax.Array
    max_kl: jax.Array


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(PPOConfig)}
TRACED_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.metadata["traced"])
STATIC_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if not f.metadata["traced"])

# Allowed closed ranges of the traced fields: (low, high, low_inclusive).
TRACED_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, math.inf, False),
    "gamma": (0.0, 1.0, True),
    "gae_lambda": (0.0, 1.0, True),
    "clip_eps": (0.0, math.inf, False),
    "ent_coef": (0.0, math.inf, True),
    "vf_coef": (0.0, math.inf, True),
    "max_grad_norm": (0.0, math.inf, False),
    "adam_eps": (0.0, math.inf, False),
    "init_log_std": (-math.inf, math.inf, True),
    "kl_coef": (0.0, math.inf, True),
    "kl_target": (0.0, math.inf, False),
    "max_kl": (0.0, math.inf, False),
}


# Seeds are drawn into uint32 keys; runs use seed, seed + 1, ... below this bound (as sweeps do).
MAX_SEED = 2**31

# Traced values are float32 on the device: a larger magnitude would become inf there.
FLOAT32_MAX = 3.4028234663852886e38


def check_traced_value(name: str, value: float) -> None:
    """Raise `ConfigError` if `value` is outside the allowed range of traced field `name` (which
    is capped at float32's largest finite magnitude)."""
    low, high, low_inclusive = TRACED_RANGES[name]
    low, high = max(low, -FLOAT32_MAX), min(high, FLOAT32_MAX)
    ok = math.isfinite(value) and (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        lo = "[" if low_inclusive else "("
        raise ConfigError(name, f"must be in {lo}{low:g}, {high:g}], got {value}")


def _check_type(name: str, value: Any, kind: type) -> None:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if kind is int and isinstance(value, bool):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(name, f"must be {kind.__name__}, got {value!r}")


def _check_widths(name: str, widths: Any) -> None:
    if not isinstance(widths, tuple) or not widths:
        raise ConfigError(name, f"must be a non-empty tuple of ints, got {widths!r}")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise ConfigError(name, f"widths must be positive integers, got {widths!r}")


def validate(config: PPOConfig) -> None:
    """Check every field; raise `ConfigError` naming the first bad one. Runs on construction."""
    for name in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "total_timesteps"):
        value = getattr(config, name)
        _check_type(name, value, int)
        if value <= 0:
            raise ConfigError(name, f"must be a positive integer, got {value}")
    _check_type("env", config.env, str)
    _check_type("seed", config.seed, int)
    if not 0 <= config.seed < MAX_SEED:
        raise ConfigError("seed", f"must be in [0, 2^31), got {config.seed}")
    for name in ("hidden_sizes", "conv_channels"):
        _check_widths(name, getattr(config, name))
    _check_type("rnn_size", config.rnn_size, int)
    if config.rnn_size <= 0:
        raise ConfigError("rnn_size", f"must be a positive integer, got {config.rnn_size}")
    if config.network not in NETWORKS:
        raise ConfigError("network", f"must be one of {', '.join(NETWORKS)}, got {config.network!r}")
    if config.activation not in ACTIVATIONS:
        raise ConfigError("activation", f"must be one of {', '.join(ACTIVATIONS)}, got {config.activation!r}")
    if config.kernel_init not in KERNEL_INITS:
        raise ConfigError("kernel_init", f"must be one of {', '.join(KERNEL_INITS)}, got {config.kernel_init!r}")
    for name in (
        "anneal_lr",
        "clip_value_loss",
        "normalize_advantages",
        "normalize_obs",
        "normalize_reward",
        "reinforce_baseline",
    ):
        _check_type(name, getattr(config, name), bool)
    if config.objective not in OBJECTIVES:
        raise ConfigError("objective", f"must be one of {', '.join(OBJECTIVE_NAMES)}, got {config.objective!r}")
    if OBJECTIVES[config.objective].on_policy and (config.num_epochs, config.num_minibatches) != (1, 1):
        raise ConfigError(
            "objective",
            f"{config.objective} takes one gradient step per rollout: set num_epochs=1 and num_minibatches=1 "
            f"(got {config.num_epochs} and {config.num_minibatches})",
        )
    if config.batch_size % config.num_minibatches:
        raise ConfigError(
            "num_minibatches",
            f"num_envs * num_steps = {config.batch_size} is not divisible by num_minibatches = "
            f"{config.num_minibatches}",
        )
    if config.total_timesteps < config.batch_size:
        raise ConfigError(
            "total_timesteps",
            f"must be at least one batch (num_envs * num_steps = {config.batch_size}), got {config.total_timesteps}",
        )
    for name in TRACED_FIELDS:
        value = getattr(config, name)
        _check_type(name, value, float)
        check_traced_value(name, float(value))


def resolve_seeds(config: PPOConfig, seeds: int | Sequence[int]) -> tuple[int, ...]:
    """An int n means seeds config.seed, ..., config.seed + n − 1; a sequence is taken as given."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("seeds", f"must be a positive integer, got {seeds}")
        seeds = range(config.seed, config.seed + int(seeds))
    out = tuple(seeds)
    if not out:
        raise ConfigError("seeds", "no seeds given")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < MAX_SEED:
            raise ConfigError("seeds", f"seeds must be integers in [0, 2^31), got {s!r}")
    if len(set(out)) != len(out):
        raise ConfigError("seeds", f"duplicate seeds {list(out)} would repeat identical runs")
    return tuple(int(s) for s in out)


def default_config(env: str = "CartPole-v1", **overrides: Any) -> PPOConfig:
    """The shipped config for `env` (tuned where listed in `ENV_DEFAULTS`) with `overrides`.

    An on-policy `objective` (reinforce, a2c) defaults to one epoch of one minibatch.
    """
    fields = {**ENV_DEFAULTS.get(env, {}), **overrides}
    objective = OBJECTIVES.get(fields.get("objective", "clip"))
    if objective is not None and objective.on_policy:
        fields.update({k: overrides.get(k, 1) for k in ("num_epochs", "num_minibatches")})
    return PPOConfig().replace(env=env, **fields)
