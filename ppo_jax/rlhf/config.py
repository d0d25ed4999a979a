"""`RLHFConfig`: every setting of the language-model pipeline, frozen and validated on construction.

Every field is declared once, with `ppo_jax.fields.declare` (default, help, range or choices,
static or traced), as the RL config's are: that declaration is the dataclass field, the check in
`validate`, the `rlhf` command's flag, and, for a traced field, a leaf of `RLHyperparams`.
Choices are the keys of registries (`core.token_losses.AGGREGATIONS`, `KL_ESTIMATORS`,
`ALGORITHMS` below, ...), so a new variant is one new entry, checked here before anything compiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp

from ppo_jax.core.policy_losses import POLICY_LOSSES
from ppo_jax.core.token_losses import AGGREGATIONS, KL_ESTIMATORS
from ppo_jax.errors import ConfigError
from ppo_jax.fields import Field, TracedValues, check_fields, declare, fields_of

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
DTYPES = ("float32", "bfloat16")
POSITIVE = {"low": 0.0, "low_inclusive": False}  # (0, high]


@dataclasses.dataclass(frozen=True)
class RLHFConfig:
    """Task, model and the phases (pretraining, reward model, RL fine-tuning). Frozen.

    Each field is declared once (`ppo_jax.fields.declare`: default, help, range or choices,
    static or traced); that declaration gives the `rlhf` command its flag, `validate` its check,
    and for a traced field a leaf of `RLHyperparams`."""

    task: str = declare(
        "arithmetic",
        "arithmetic (verifiable exact-match reward), preference (learned reward), or jsonl:PATH (your prompts "
        "and answers; needs --model hf:PATH)",
        choices=TASKS,
        prefix="jsonl:",
    )
    algo: str = declare(
        "grpo",
        "RL algorithm: grpo, ppo (critic, GAE over tokens), rloo, reinforce or reinforce++ (token returns)",
        choices=tuple(ALGORITHMS),
    )
    model: str = declare(
        "transformer",
        "language model of every role: transformer, gru, or hf:PATH (a Hugging Face checkpoint folder)",
        choices=MODELS,
        prefix="hf:",
    )
    seed: int = declare(0, "random seed of the whole pipeline", low=0)
    # arithmetic task
    digits: int = declare(2, "arithmetic: digits of each operand (the prompts are all pairs: at most 4)", low=1, high=4)
    corpus_accuracy: float = declare(0.3, "arithmetic: fraction of pretraining answers that are right", low=0, high=1)
    # preference task
    vocab_size: int = declare(
        12, "preference: letters in the vocabulary (EOS is one more token)", low=3, high=MAX_VOCAB
    )
    prompt_len: int = declare(4, "preference: prompt length in tokens", low=1)
    completion_len: int = declare(8, "preference, jsonl: maximum completion length in tokens (EOS included)", low=1)
    corpus_run_prob: float = declare(
        0.1, "preference: probability that a corpus token continues the alphabet", low=0, high=1
    )
    corpus_temperature: float = declare(1.0, "preference: scale of the corpus bigram logits", low=0)
    corpus_eos_prob: float = declare(
        0.1, "preference: probability that the corpus ends a completion at each token", low=0, high=1
    )
    # jsonl task
    prompt_field: str = declare("prompt", "jsonl: the field holding the prompt text")
    answer_field: str = declare("answer", "jsonl: the field holding the answer text")
    reward: str = declare("exact", "jsonl: reward of a completion: exact, numeric, format, math, or module:function")
    held_out: float = declare(
        0.2, "jsonl: fraction of the rows kept for evaluation (by a hash of the prompt)", **POSITIVE, high=1
    )
    # model
    model_dtype: str = declare(
        "float32", "hf: weight dtype, float32 or bfloat16 (norms and softmax stay float32)", choices=DTYPES
    )
    lora_rank: int = declare(0, "hf: rank of the LoRA adapters trained in RL; 0: full fine-tuning", low=0)
    lora_alpha: float = declare(
        16.0, "hf: LoRA scale numerator (adapters scaled by lora_alpha / lora_rank)", **POSITIVE
    )
    remat: bool = declare(
        False, "hf: recompute each decoder layer's activations in the backward pass (less memory, more compute)"
    )
    shard_params: bool = declare(
        False, "hf: shard weights, Adam state and batches of the RL phase over all devices (FSDP; same results)"
    )
    score_batch: int = declare(
        0,
        "sequences scored at once after sampling (policy, reference and critic logits [n, T, V]); 0: the whole "
        "batch; smaller bounds the logits of a large vocabulary",
        low=0,
    )
    d_model: int = declare(64, "transformer width", low=1)
    num_layers: int = declare(2, "transformer blocks", low=1)
    num_heads: int = declare(4, "transformer attention heads", low=1)
    positions: str = declare("learned", "transformer positions: learned or rotary", choices=POSITIONS)
    hidden_dim: int = declare(64, "GRU hidden width", low=1)
    # phase 1: next-token pretraining
    pretrain_steps: int = declare(1000, "pretraining (hf: supervised fine-tuning) gradient steps; 0: none", low=0)
    pretrain_batch: int = declare(256, "sequences per pretraining step", low=1)
    pretrain_lr: float = declare(3e-3, "pretraining Adam peak learning rate", **POSITIVE)
    max_grad_norm: float = declare(1.0, "global gradient-norm clip of every phase", **POSITIVE)
    # reward model (preference task)
    rm_pairs: int = declare(4096, "preference: pairs to train the reward model on", low=1)
    rm_eval_pairs: int = declare(1024, "preference: held-out pairs for the reward-model accuracy", low=1)
    rm_steps: int = declare(600, "preference: reward-model gradient steps", low=1)
    rm_batch: int = declare(128, "preference: pairs per reward-model step", low=1)
    rm_lr: float = declare(1e-3, "preference: reward-model Adam learning rate", **POSITIVE)
    # phase 2: RL fine-tuning (from rl_updates to ent_coef; see RL_FIELDS)
    rl_updates: int = declare(60, "RL updates (each: sample, score, epochs of minibatch steps)", low=1)
    rl_batch: int = declare(256, "completions sampled per RL update", low=1)
    group_size: int = declare(
        8, "completions per prompt for the critic-free algorithms (rl_batch / group_size prompts)", low=1
    )
    num_epochs: int = declare(2, "passes over each RL batch", low=1)
    num_minibatches: int = declare(2, "minibatches per epoch", low=1)
    rl_lr: float = declare(3e-4, "RL Adam learning rate", traced=True, **POSITIVE)
    clip_eps_low: float = declare(0.2, "ratio clip below: 1 - clip_eps_low", traced=True, **POSITIVE, high=1)
    clip_eps_high: float = declare(
        0.2, "ratio clip above: 1 + clip_eps_high (DAPO clip-higher: 0.28)", traced=True, **POSITIVE
    )
    kl_coef: float = declare(0.04, "beta: weight of the KL to the reference", traced=True, low=0)
    kl_estimator: str = declare(
        "auto",
        "per-token KL estimator: k1, k2, k3, or auto (k1 in the reward, k3 in the loss)",
        choices=("auto", *KL_ESTIMATORS),
    )
    kl_penalty: str = declare(
        "auto", "where beta*KL goes: reward (per token), loss, or auto (ppo: reward, else loss)", choices=KL_PENALTIES
    )
    loss_aggregation: str = declare(
        "seq-mean-token-mean", "token loss aggregation: " + ", ".join(AGGREGATIONS), choices=tuple(AGGREGATIONS)
    )
    policy_loss: str = declare(
        "vanilla",
        "policy loss: vanilla (PPO clip), gspo (sequence ratio) or cispo (clipped IS weight)",
        choices=tuple(POLICY_LOSSES),
    )
    scale_advantages: bool = declare(True, "divide group advantages by their std (Dr. GRPO: false)")
    skip_equal_groups: bool = declare(False, "leave out groups whose rewards are all equal (DAPO dynamic sampling)")
    truncated_completions: str = declare("keep", "completions without EOS: keep, penalise or mask", choices=TRUNCATION)
    truncation_penalty: float = declare(
        1.0, "subtracted from the reward of a truncated completion (penalise)", traced=True, low=0
    )
    gamma: float = declare(1.0, "discount over tokens (ppo, reinforce++)", traced=True, low=0, high=1)
    gae_lambda: float = declare(0.95, "GAE lambda over tokens (ppo)", traced=True, low=0, high=1)
    vf_coef: float = declare(0.5, "value-loss coefficient (ppo)", traced=True, low=0)
    clip_value_loss: bool = declare(False, "clip the value update to ±clip_eps_low around the old value (ppo)")
    ent_coef: float = declare(0.0, "entropy bonus coefficient", traced=True, low=0)
    # evaluation and reporting
    eval_prompts: int = declare(512, "held-out prompts for the before/after evaluation", low=1)
    num_samples: int = declare(6, "sample completions to report before and after", low=1)
    log_every: int = declare(100, "progress callback every this many pretraining / reward-model steps", low=1)

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
        return dataclasses.replace(self, **{name: FIELDS[name].default for name in RL_FIELDS})

    def rl_hyperparams(self) -> RLHyperparams:
        """The RL-phase scalars (the traced fields) as a pytree of float32 scalars (jit takes them as
        arguments)."""
        return RLHyperparams(**{name: jnp.float32(getattr(self, name)) for name in RL_TRACED_FIELDS})

    def static_rl_config(self) -> RLHFConfig:
        """This config with the traced RL scalars at their defaults: the compile key of the RL phase."""
        return dataclasses.replace(self, **{name: FIELDS[name].default for name in RL_TRACED_FIELDS})

    def replace(self, **changes: Any) -> RLHFConfig:
        """A new, validated config with `changes` applied."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


class RLHyperparams(TracedValues):
    """RL-phase scalars passed to the jitted RL phase as traced values (a new value needs no
    recompile, and `jax.vmap` can map over them): the `RLHFConfig` fields declared traced, by name
    (`hp.rl_lr`, `hp.kl_coef`, ...)."""


# Every field, declared once in `RLHFConfig`.
FIELDS: dict[str, Field] = fields_of(RLHFConfig)
RL_TRACED_FIELDS: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.traced)
_FIRST_RL_FIELD = "rl_updates"
# Fields that only phase 2 (RL fine-tuning and its report) reads.
RL_FIELDS: tuple[str, ...] = (
    "algo",
    *list(FIELDS)[list(FIELDS).index(_FIRST_RL_FIELD) : list(FIELDS).index("eval_prompts")],
)
# The fields whose value is one of a fixed set (the flags' argparse choices).
CHOICES: dict[str, tuple[str, ...]] = {name: f.choices for name, f in FIELDS.items() if f.choices and not f.prefix}


def _check_sizes(config: RLHFConfig) -> None:
    """The checks between fields (each field's own range is checked from its declaration)."""
    if config.task.startswith("jsonl:") and not config.model.startswith("hf:"):
        raise ConfigError("task", "jsonl:PATH needs --model hf:PATH (the tokenizer comes from the checkpoint)")
    for name in ("lora_rank", "remat", "shard_params"):
        if getattr(config, name) and not config.model.startswith("hf:"):
            raise ConfigError(name, "is for --model hf:PATH (the Hugging Face decoder)")
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


def validate(config: RLHFConfig) -> None:
    """Check every field against its declaration, then the fields against each other; raise
    `ConfigError` naming the first bad one. Runs on construction."""
    check_fields(config, FIELDS)
    _check_sizes(config)
