"""`RLHFConfig`: every setting of the language-model pipeline, frozen and validated on construction.

Choices are the keys of registries (`core.token_losses.AGGREGATIONS`, `KL_ESTIMATORS`,
`ALGORITHMS` below, ...), so a new variant is one new entry, checked here before anything compiles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ppo_jax.config import ConfigError
from ppo_jax.core.policy_losses import POLICY_LOSSES
from ppo_jax.core.token_losses import AGGREGATIONS, KL_ESTIMATORS

MAX_VOCAB = 26  # preference task: tokens are shown as the letters a..z


class Algorithm(NamedTuple):
    """How an RL algorithm gets its advantages; `kl_penalty` is where β·KL goes by default."""

    critic: bool  # a learned value head and GAE over tokens (PPO); else a sequence-level baseline
    kl_penalty: str  # "reward" (per-token reward) or "loss" (a loss term)
    token_returns: bool = False  # critic-free per-token returns, normalised over the batch (REINFORCE++)
    min_group: int = 2  # completions per prompt it needs (2: a statistic over each group)


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm(critic=False, kl_penalty="loss"),
    "ppo": Algorithm(critic=True, kl_penalty="reward"),
    "rloo": Algorithm(critic=False, kl_penalty="loss"),
    "reinforce": Algorithm(critic=False, kl_penalty="loss"),
    "reinforce++": Algorithm(critic=False, kl_penalty="reward", token_returns=True, min_group=1),
}
TASKS = ("arithmetic", "preference")
MODELS = ("transformer", "gru")
POSITIONS = ("learned", "rotary")
KL_PENALTIES = ("auto", "reward", "loss")
TRUNCATION = ("keep", "penalise", "mask")


def _field(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class RLHFConfig:
    """Task, model and the phases (pretraining, reward model, RL fine-tuning). Frozen."""

    task: str = _field(
        "arithmetic",
        "arithmetic (verifiable exact-match reward), preference (learned reward), or jsonl:PATH (your prompts "
        "and answers; needs --model hf:PATH)",
    )
    algo: str = _field(
        "grpo", "RL algorithm: grpo, ppo (critic, GAE over tokens), rloo, reinforce or reinforce++ (token returns)"
    )
    model: str = _field(
        "transformer", "language model of every role: transformer, gru, or hf:PATH (a Hugging Face checkpoint folder)"
    )
    seed: int = _field(0, "random seed of the whole pipeline")
    # arithmetic task
    digits: int = _field(2, "arithmetic: digits of each operand")
    corpus_accuracy: float = _field(0.3, "arithmetic: fraction of pretraining answers that are right")
    # preference task
    vocab_size: int = _field(12, "preference: letters in the vocabulary (EOS is one more token)")
    prompt_len: int = _field(4, "preference: prompt length in tokens")
    completion_len: int = _field(8, "preference, jsonl: maximum completion length in tokens (EOS included)")
    corpus_run_prob: float = _field(0.1, "preference: probability that a corpus token continues the alphabet")
    corpus_temperature: float = _field(1.0, "preference: scale of the corpus bigram logits")
    corpus_eos_prob: float = _field(0.1, "preference: probability that the corpus ends a completion at each token")
    # jsonl task
    prompt_field: str = _field("prompt", "jsonl: the field holding the prompt text")
    answer_field: str = _field("answer", "jsonl: the field holding the answer text")
    reward: str = _field("exact", "jsonl: reward of a completion: exact, numeric, format, or module:function")
    held_out: float = _field(0.2, "jsonl: fraction of the rows kept for evaluation (by a hash of the prompt)")
    # model
    model_dtype: str = _field("float32", "hf: weight dtype, float32 or bfloat16 (norms and softmax stay float32)")
    lora_rank: int = _field(0, "hf: rank of the LoRA adapters trained in RL; 0: full fine-tuning")
    lora_alpha: float = _field(16.0, "hf: LoRA scale numerator (adapters scaled by lora_alpha / lora_rank)")
    d_model: int = _field(64, "transformer width")
    num_layers: int = _field(2, "transformer blocks")
    num_heads: int = _field(4, "transformer attention heads")
    positions: str = _field("learned", "transformer positions: learned or rotary")
    hidden_dim: int = _field(64, "GRU hidden width")
    # phase 1: next-token pretraining
    pretrain_steps: int = _field(1000, "pretraining (hf: supervised fine-tuning) gradient steps; 0: none")
    pretrain_batch: int = _field(256, "sequences per pretraining step")
    pretrain_lr: float = _field(3e-3, "pretraining Adam peak learning rate")
    max_grad_norm: float = _field(1.0, "global gradient-norm clip of every phase")
    # reward model (preference task)
    rm_pairs: int = _field(4096, "preference: pairs to train the reward model on")
    rm_eval_pairs: int = _field(1024, "preference: held-out pairs for the reward-model accuracy")
    rm_steps: int = _field(600, "preference: reward-model gradient steps")
    rm_batch: int = _field(128, "preference: pairs per reward-model step")
    rm_lr: float = _field(1e-3, "preference: reward-model Adam learning rate")
    # phase 2: RL fine-tuning
    rl_updates: int = _field(60, "RL updates (each: sample, score, epochs of minibatch steps)")
    rl_batch: int = _field(256, "completions sampled per RL update")
    group_size: int = _field(8, "completions per prompt for the critic-free algorithms (rl_batch / group_size prompts)")
    num_epochs: int = _field(2, "passes over each RL batch")
    num_minibatches: int = _field(2, "minibatches per epoch")
    rl_lr: float = _field(3e-4, "RL Adam learning rate")
    clip_eps_low: float = _field(0.2, "ratio clip below: 1 - clip_eps_low")
    clip_eps_high: float = _field(0.2, "ratio clip above: 1 + clip_eps_high (DAPO clip-higher: 0.28)")
    kl_coef: float = _field(0.04, "beta: weight of the KL to the reference")
    kl_estimator: str = _field("auto", "per-token KL estimator: k1, k2, k3, or auto (k1 in the reward, k3 in the loss)")
    kl_penalty: str = _field("auto", "where beta*KL goes: reward (per token), loss, or auto (ppo: reward, else loss)")
    loss_aggregation: str = _field("seq-mean-token-mean", "token loss aggregation: " + ", ".join(AGGREGATIONS))
    policy_loss: str = _field(
        "vanilla", "policy loss: vanilla (PPO clip), gspo (sequence ratio) or cispo (clipped IS weight)"
    )
    scale_advantages: bool = _field(True, "divide group advantages by their std (Dr. GRPO: false)")
    skip_equal_groups: bool = _field(False, "leave out groups whose rewards are all equal (DAPO dynamic sampling)")
    truncated_completions: str = _field("keep", "completions without EOS: keep, penalise or mask")
    truncation_penalty: float = _field(1.0, "subtracted from the reward of a truncated completion (penalise)")
    gamma: float = _field(1.0, "discount over tokens (ppo, reinforce++)")
    gae_lambda: float = _field(0.95, "GAE lambda over tokens (ppo)")
    vf_coef: float = _field(0.5, "value-loss coefficient (ppo)")
    clip_value_loss: bool = _field(False, "clip the value update to ±clip_eps_low around the old value (ppo)")
    ent_coef: float = _field(0.0, "entropy bonus coefficient")
    # evaluation and reporting
    eval_prompts: int = _field(512, "held-out prompts for the before/after evaluation")
    num_samples: int = _field(6, "sample completions to report before and after")
    log_every: int = _field(100, "progress callback every this many pretraining / reward-model steps")

    def __post_init__(self):
        validate(self)

    @property
    def algorithm(self) -> Algorithm:
        return ALGORITHMS[self.algo]

    @property
    def grouped(self) -> bool:
        """Critic-free algorithms sample `group_size` completions per prompt."""
        return not self.algorithm.critic

    @property
    def rl_prompts(self) -> int:
        """Distinct prompts per RL update: rl_batch for ppo, rl_batch / group_size otherwise."""
        return self.rl_batch // self.group_size if self.grouped else self.rl_batch

    @property
    def kl_in_reward(self) -> bool:
        """β·KL as a per-token reward (True) or as a loss term (False)."""
        return (self.algorithm.kl_penalty if self.kl_penalty == "auto" else self.kl_penalty) == "reward"

    @property
    def task_metric(self) -> str:
        """Name of the task's own reward in reports: accuracy (exact match) or true_reward (hidden rule)."""
        return "true_reward" if self.task == "preference" else "accuracy"

    @property
    def kl_estimator_name(self) -> str:
        """The estimator used: `kl_estimator`, or for auto k1 when the KL is a reward (its
        score-function gradient E[∇log π · k1] is ∇KL; k3's is not) and k3 in the loss (GRPO)."""
        if self.kl_estimator != "auto":
            return self.kl_estimator
        return "k1" if self.kl_in_reward else "k3"

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
    clip_eps_low: jax.Array
    clip_eps_high: jax.Array
    kl_coef: jax.Array
    truncation_penalty: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    vf_coef: jax.Array
    ent_coef: jax.Array


RL_TRACED_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RLHyperparams))
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RLHFConfig)}
_FIRST_RL_FIELD = "rl_updates"
# Fields that only phase 2 (RL fine-tuning and its report) reads.
RL_FIELDS: tuple[str, ...] = (
    "algo",
    *list(FIELDS)[list(FIELDS).index(_FIRST_RL_FIELD) : list(FIELDS).index("eval_prompts")],
)

CHOICES: dict[str, tuple[str, ...]] = {
    "algo": tuple(ALGORITHMS),
    "model_dtype": ("float32", "bfloat16"),
    "positions": POSITIONS,
    "kl_estimator": ("auto", *KL_ESTIMATORS),
    "kl_penalty": KL_PENALTIES,
    "loss_aggregation": tuple(AGGREGATIONS),
    "policy_loss": tuple(POLICY_LOSSES),
    "truncated_completions": TRUNCATION,
}
_BOOLS = ("scale_advantages", "skip_equal_groups", "clip_value_loss")
_POSITIVE_INTS = (
    "digits",
    "prompt_len",
    "completion_len",
    "d_model",
    "num_layers",
    "num_heads",
    "hidden_dim",
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
    "corpus_accuracy": (0.0, 1.0, True),
    "held_out": (0.0, 1.0, False),
    "lora_alpha": (0.0, math.inf, False),
    "corpus_run_prob": (0.0, 1.0, True),
    "corpus_temperature": (0.0, math.inf, True),
    "corpus_eos_prob": (0.0, 1.0, True),
    "pretrain_lr": (0.0, math.inf, False),
    "rm_lr": (0.0, math.inf, False),
    "rl_lr": (0.0, math.inf, False),
    "clip_eps_low": (0.0, 1.0, False),
    "clip_eps_high": (0.0, math.inf, False),
    "kl_coef": (0.0, math.inf, True),
    "truncation_penalty": (0.0, math.inf, True),
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


def _check_sizes(config: RLHFConfig) -> None:
    if config.vocab_size > MAX_VOCAB:
        raise ConfigError("vocab_size", f"must be <= {MAX_VOCAB}, got {config.vocab_size}")
    if config.digits > 4:
        raise ConfigError(
            "digits", f"must be <= 4 (the prompts are all pairs of that many digits), got {config.digits}"
        )
    if config.d_model % config.num_heads or (config.positions == "rotary" and (config.d_model // config.num_heads) % 2):
        raise ConfigError("num_heads", f"must divide d_model = {config.d_model} (into even parts for rotary)")
    if config.grouped:
        if config.group_size < config.algorithm.min_group:
            raise ConfigError(
                "group_size", f"{config.algo} needs at least {config.algorithm.min_group} completions per prompt"
            )
        if config.rl_batch % config.group_size:
            raise ConfigError("group_size", f"must divide rl_batch = {config.rl_batch}, got {config.group_size}")
        if config.skip_equal_groups and config.algorithm.min_group < 2:
            raise ConfigError("skip_equal_groups", f"needs a statistic over each group; {config.algo} uses none")
    elif config.skip_equal_groups:
        raise ConfigError("skip_equal_groups", f"needs groups of completions per prompt; {config.algo} has none")
    if config.rl_batch % config.num_minibatches:
        raise ConfigError("num_minibatches", f"must divide rl_batch = {config.rl_batch}, got {config.num_minibatches}")
    if config.num_samples > config.eval_prompts:
        raise ConfigError("num_samples", f"must be <= eval_prompts = {config.eval_prompts}, got {config.num_samples}")


def _check_named(name: str, value: Any, allowed: tuple[str, ...], prefix: str) -> None:
    """`value` is one of `allowed` or `prefix` followed by a non-empty path."""
    if not isinstance(value, str) or not (value in allowed or (value.startswith(prefix) and len(value) > len(prefix))):
        raise ConfigError(name, f"must be one of {', '.join(allowed)} or {prefix}PATH, got {value!r}")


def validate(config: RLHFConfig) -> None:
    """Check every field; raise `ConfigError` naming the first bad one. Runs on construction."""
    for name, allowed in CHOICES.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
    _check_named("task", config.task, TASKS, "jsonl:")
    _check_named("model", config.model, MODELS, "hf:")
    _check_int("seed", config.seed, 0)
    _check_int("pretrain_steps", config.pretrain_steps, 0)
    _check_int("lora_rank", config.lora_rank, 0)
    if config.task.startswith("jsonl:") and not config.model.startswith("hf:"):
        raise ConfigError("task", "jsonl:PATH needs --model hf:PATH (the tokenizer comes from the checkpoint)")
    if config.lora_rank and not config.model.startswith("hf:"):
        raise ConfigError("lora_rank", "LoRA adapters are for --model hf:PATH")
    _check_int("vocab_size", config.vocab_size, 3)
    for name in _POSITIVE_INTS:
        _check_int(name, getattr(config, name), 1)
    for name in _FLOAT_RANGES:
        _check_float(name, getattr(config, name))
    for name in _BOOLS:
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(name, f"must be true or false, got {getattr(config, name)!r}")
    _check_sizes(config)
