"""`RLHFConfig`: every setting of the token-level RLHF pipeline, frozen and validated on construction."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ppo_jax.config import ConfigError

ALGOS = ("ppo", "grpo")
MAX_VOCAB = 26  # tokens are shown as the letters a..z


def _field(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class RLHFConfig:
    """Task, model and the three phases (pretraining, reward model, RL fine-tuning). Frozen."""

    algo: str = _field("ppo", "RL algorithm of phase 2: ppo (with a critic) or grpo (critic-free)")
    seed: int = _field(0, "random seed of the whole pipeline")
    # task
    vocab_size: int = _field(12, "number of tokens (shown as letters a, b, ...)")
    prompt_len: int = _field(4, "prompt length in tokens")
    completion_len: int = _field(8, "completion length in tokens (every completion has this length)")
    corpus_run_prob: float = _field(0.1, "probability that a corpus token continues the alphabet run")
    corpus_temperature: float = _field(1.0, "scale of the corpus bigram logits (higher: more peaked)")
    # model
    hidden_dim: int = _field(64, "GRU hidden width")
    # phase 1: next-token pretraining
    pretrain_steps: int = _field(1000, "pretraining gradient steps")
    pretrain_batch: int = _field(128, "sequences per pretraining step")
    pretrain_lr: float = _field(3e-3, "pretraining Adam learning rate")
    # reward model
    rm_pairs: int = _field(4096, "preference pairs to train the reward model on")
    rm_eval_pairs: int = _field(1024, "held-out preference pairs for the reward-model accuracy")
    rm_steps: int = _field(600, "reward-model gradient steps")
    rm_batch: int = _field(128, "preference pairs per reward-model step")
    rm_lr: float = _field(1e-3, "reward-model Adam learning rate")
    # phase 2: RL fine-tuning
    rl_updates: int = _field(100, "RL updates (each: sample, score, epochs of minibatch steps)")
    rl_batch: int = _field(256, "completions sampled per RL update")
    group_size: int = _field(8, "GRPO: completions per prompt (rl_batch / group_size prompts)")
    num_epochs: int = _field(4, "passes over each RL batch")
    num_minibatches: int = _field(4, "minibatches per epoch")
    rl_lr: float = _field(1e-3, "RL Adam learning rate")
    clip_eps: float = _field(0.2, "ratio clip range epsilon")
    kl_coef: float = _field(0.1, "beta: weight of the KL to the reference (per-token reward for ppo, loss for grpo)")
    gamma: float = _field(1.0, "discount over tokens (ppo)")
    gae_lambda: float = _field(0.95, "GAE lambda over tokens (ppo)")
    vf_coef: float = _field(0.5, "value-loss coefficient (ppo)")
    clip_value_loss: bool = _field(False, "clip the value update to ±clip_eps around the old value (ppo)")
    ent_coef: float = _field(0.0, "entropy bonus coefficient")
    max_grad_norm: float = _field(1.0, "global gradient-norm clip")
    # evaluation and reporting
    eval_prompts: int = _field(512, "prompts for the before/after evaluation")
    num_samples: int = _field(6, "sample generations to report before and after")
    log_every: int = _field(100, "progress callback every this many pretraining / reward-model steps")

    def __post_init__(self):
        validate(self)

    @property
    def rl_prompts(self) -> int:
        """Distinct prompts per RL update: rl_batch for ppo, rl_batch / group_size for grpo."""
        return self.rl_batch // self.group_size if self.algo == "grpo" else self.rl_batch

    @property
    def minibatch_size(self) -> int:
        """Completions per RL minibatch."""
        return self.rl_batch // self.num_minibatches

    def pretraining_config(self) -> RLHFConfig:
        """This config with every RL-phase field at its default: what phase 1 (pretraining, reward
        model) depends on, so that runs differing only in RL settings share phase 1 and its compile."""
        defaults = RLHFConfig()
        return dataclasses.replace(self, **{name: getattr(defaults, name) for name in RL_FIELDS})

    def rl_hyperparams(self) -> RLHyperparams:
        """The RL-phase scalars as a traced pytree of float32 scalars."""
        return RLHyperparams(**{name: jnp.float32(getattr(self, name)) for name in RL_TRACED_FIELDS})

    def static_rl_config(self) -> RLHFConfig:
        """This config with the traced RL scalars at their defaults: the compile key of the RL phase."""
        defaults = RLHFConfig()
        return dataclasses.replace(self, **{name: getattr(defaults, name) for name in RL_TRACED_FIELDS})

    def replace(self, **changes: Any) -> RLHFConfig:
        """A new, validated config with `changes` applied."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


@struct.dataclass
class RLHyperparams:
    """RL-phase scalars passed to the jitted RL phase as traced values (a new value needs no
    recompile, and `jax.vmap` can map over them). Same names as the `RLHFConfig` fields."""

    rl_lr: jax.Array
    clip_eps: jax.Array
    kl_coef: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    vf_coef: jax.Array
    ent_coef: jax.Array


RL_TRACED_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RLHyperparams))
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RLHFConfig)}
# Fields that only phase 2 (RL fine-tuning and its report) reads.
RL_FIELDS: tuple[str, ...] = (
    "algo",
    "rl_updates",
    "rl_batch",
    "group_size",
    "num_epochs",
    "num_minibatches",
    "rl_lr",
    "clip_eps",
    "kl_coef",
    "gamma",
    "gae_lambda",
    "vf_coef",
    "clip_value_loss",
    "ent_coef",
)

_POSITIVE_INTS = (
    "prompt_len",
    "completion_len",
    "hidden_dim",
    "pretrain_steps",
    "pretrain_batch",
    "rm_pairs",
    "rm_eval_pairs",
    "rm_steps",
    "rm_batch",
    "rl_updates",
    "rl_batch",
    "group_size",
    "num_epochs",
    "num_minibatches",
    "eval_prompts",
    "num_samples",
    "log_every",
)
# (low, high, low_inclusive) closed above.
_FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "corpus_run_prob": (0.0, 1.0, True),
    "corpus_temperature": (0.0, math.inf, True),
    "pretrain_lr": (0.0, math.inf, False),
    "rm_lr": (0.0, math.inf, False),
    "rl_lr": (0.0, math.inf, False),
    "clip_eps": (0.0, math.inf, False),
    "kl_coef": (0.0, math.inf, True),
    "gamma": (0.0, 1.0, True),
    "gae_lambda": (0.0, 1.0, True),
    "vf_coef": (0.0, math.inf, True),
    "ent_coef": (0.0, math.inf, True),
    "max_grad_norm": (0.0, math.inf, False),
}


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(name, f"must be >= {low}, got {value}")


def _check_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number, got {value!r}")
    low, high, low_inclusive = _FLOAT_RANGES[name]
    ok = math.isfinite(value) and (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        raise ConfigError(name, f"must be in {'[' if low_inclusive else '('}{low}, {high}], got {value}")


def validate(config: RLHFConfig) -> None:
    """Check every field; raise `ConfigError` naming the first bad one. Runs on construction."""
    if config.algo not in ALGOS:
        raise ConfigError("algo", f"must be one of {', '.join(ALGOS)}, got {config.algo!r}")
    _check_int("seed", config.seed, 0)
    _check_int("vocab_size", config.vocab_size, 3)
    if config.vocab_size > MAX_VOCAB:
        raise ConfigError("vocab_size", f"must be <= {MAX_VOCAB}, got {config.vocab_size}")
    for name in _POSITIVE_INTS:
        _check_int(name, getattr(config, name), 1)
    for name in _FLOAT_RANGES:
        _check_float(name, getattr(config, name))
    if not isinstance(config.clip_value_loss, bool):
        raise ConfigError("clip_value_loss", f"must be a bool, got {config.clip_value_loss!r}")
    if config.algo == "grpo":
        if config.group_size < 2:
            raise ConfigError("group_size", f"grpo needs at least 2 completions per prompt, got {config.group_size}")
        if config.rl_batch % config.group_size:
            raise ConfigError("group_size", f"must divide rl_batch = {config.rl_batch}, got {config.group_size}")
    if config.rl_batch % config.num_minibatches:
        raise ConfigError("num_minibatches", f"must divide rl_batch = {config.rl_batch}, got {config.num_minibatches}")
    if config.num_samples > config.eval_prompts:
        raise ConfigError("num_samples", f"must be <= eval_prompts = {config.eval_prompts}, got {config.num_samples}")
