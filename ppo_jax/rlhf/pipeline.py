"""`run_rlhf(config) -> RLHFResult`: pretraining, reward model and RL fine-tuning, end to end.

Each phase is one jitted program; this module only sequences them, times them and collects the
numbers. It never prints: progress goes to the optional `callback(phase, step, metrics)`.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax.config import ConfigError
from ppo_jax.rlhf.config import FIELDS, RLHFConfig
from ppo_jax.rlhf.finetune import EvalStats, Frozen, Rollout, evaluate, finetune, reward_statistics
from ppo_jax.rlhf.pretrain import Callback, PhaseResult, RewardModelResult, pretrain, train_reward_model
from ppo_jax.rlhf.task import decode, make_corpus, sample_prompts


class RLHFParams(NamedTuple):
    """The three trained models."""

    policy: Any  # after RL fine-tuning
    reference: Any  # after pretraining (frozen during RL)
    reward: Any  # reward model


class RLHFResult(NamedTuple):
    """Everything a run produced; `summary` and the histories are plain Python / NumPy."""

    config: RLHFConfig
    summary: dict[str, float]
    history: dict[str, np.ndarray]  # RL phase, per update
    pretrain_history: dict[str, np.ndarray]  # per step
    reward_model_history: dict[str, np.ndarray]  # per step
    samples_before: list[dict[str, Any]]
    samples_after: list[dict[str, Any]]
    timings: dict[str, float]  # seconds per phase, compile included
    params: RLHFParams


class Keys(NamedTuple):
    """One key per use, all split from the config seed."""

    corpus: jax.Array
    pretrain: jax.Array
    reward_model: jax.Array
    reward_stats: jax.Array
    eval_prompts: jax.Array
    eval_sample: jax.Array
    finetune: jax.Array


def split_keys(seed: int) -> Keys:
    return Keys(*jax.random.split(jax.random.key(seed), len(Keys._fields)))


def samples(config: RLHFConfig, rollout: Rollout) -> list[dict[str, Any]]:
    """The first `num_samples` generations of an evaluation, as letters with their true reward."""
    return [
        {
            "prompt": decode(rollout.prompts[i]),
            "completion": decode(rollout.completions[i]),
            "true_reward": float(rollout.true_reward[i]),
        }
        for i in range(config.num_samples)
    ]


def _timed(timings: dict[str, float], name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    timings[name] = time.perf_counter() - start
    return out


def _host(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


class Phase1(NamedTuple):
    """Everything RL starts from: the pretrained policy, the reward model and its statistics."""

    config: RLHFConfig  # the `pretraining_config()` it was made with
    pretrain: PhaseResult
    reward_model: RewardModelResult
    frozen: Frozen  # reference = pretrained policy, reward model, reward mean and std
    timings: dict[str, float]


def prepare(config: RLHFConfig, callback: Callback | None = None) -> Phase1:
    """Phase 1 and the reward model. Depends only on `config.pretraining_config()`, so one result
    serves runs that differ only in RL settings (e.g. PPO and GRPO on the same reward model)."""
    config = config.pretraining_config()
    keys = split_keys(config.seed)
    timings: dict[str, float] = {}
    corpus = make_corpus(keys.corpus, config.vocab_size, config.corpus_run_prob, config.corpus_temperature)
    pre = _timed(timings, "pretrain", pretrain, config, corpus, keys.pretrain, callback)
    rm = _timed(timings, "reward_model", train_reward_model, config, corpus, pre.params, keys.reward_model, callback)
    mean, std = reward_statistics(config, pre.params, rm.params, keys.reward_stats)
    return Phase1(config, pre, rm, Frozen(pre.params, rm.params, mean, std), timings)


def _check_phase1(config: RLHFConfig, phase1: Phase1) -> None:
    expected = config.pretraining_config()
    for name in FIELDS:
        if getattr(phase1.config, name) != getattr(expected, name):
            raise ConfigError(
                name, f"differs from the value phase1 was prepared with ({getattr(phase1.config, name)!r})"
            )


def run_rlhf(config: RLHFConfig, callback: Callback | None = None, phase1: Phase1 | None = None) -> RLHFResult:
    """Pretrain the policy, fit the reward model, fine-tune with `config.algo`, evaluate before and after.

    `phase1` (from `prepare`) skips pretraining and the reward model; its settings must match.
    The same evaluation prompts and sampling key are used before (the reference policy) and after.
    """
    if phase1 is None:
        phase1 = prepare(config, callback)
    _check_phase1(config, phase1)
    keys = split_keys(config.seed)
    timings = dict(phase1.timings)
    frozen, reference = phase1.frozen, phase1.frozen.reference
    prompts = sample_prompts(keys.eval_prompts, config.eval_prompts, config.prompt_len, config.vocab_size)
    # Evaluation reads only phase-1 settings: compile it for phase1.config, shared by all RL settings.
    before, rollout_before = evaluate(phase1.config, reference, frozen, prompts, keys.eval_sample)
    rl = _timed(timings, "rl", finetune, config, reference, frozen, keys.finetune, callback)
    after, rollout_after = evaluate(phase1.config, rl.params, frozen, prompts, keys.eval_sample)
    timings["total"] = sum(timings.values())
    return RLHFResult(
        config=config,
        summary=summarize(before, after, phase1.reward_model.eval_accuracy),
        history=_host(rl.history),
        pretrain_history=_host(phase1.pretrain.history),
        reward_model_history=_host(phase1.reward_model.history),
        samples_before=samples(config, rollout_before),
        samples_after=samples(config, rollout_after),
        timings=timings,
        params=RLHFParams(rl.params, reference, frozen.reward),
    )


def summarize(before: EvalStats, after: EvalStats, rm_accuracy: jax.Array) -> dict[str, float]:
    """The headline numbers as Python floats."""
    return {
        "true_reward_before": float(before.true_reward),
        "true_reward_after": float(after.true_reward),
        "reward_model_accuracy": float(rm_accuracy),
        "kl_to_reference": float(after.kl),
        "learned_reward_before": float(before.score),
        "learned_reward_after": float(after.score),
    }
