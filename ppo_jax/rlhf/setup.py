"""What the RL phase is run on: the task, the model of every role, and the sequence reward.

`RLSetup(config, task, policy, critic, reward_model, sharding)` is static (hashable) and is all the
jitted programs read besides arrays; `sharding` (`rlhf.sharding.ParamSharding`, or None for one
device) places the parameters, optimizer state and batches of the RL phase on a device mesh.
`make_setup(config)` builds the shipped one; a user passes their own `LanguageModel` records for
the policy (its frozen copy is the reference) and the critic.

A task is any object with `vocab_size`, `eos_id`, `prompt_len`, `completion_len`,
`prompts(key, num, held_out=False) -> [num, P]`, `reward(prompts, completions) -> [B]` (the
verifiable or hidden true reward), `corpus(key, num) -> (prompts, completions)`, `decode(tokens)`,
`name`, `needs_reward_model` (and `preference_pairs(key, num)` when that is True).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppo_jax.core.token_losses import last_token_index
from ppo_jax.rlhf import hf_model, sharding
from ppo_jax.rlhf.arithmetic import ArithmeticTask
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.lm import LanguageModel, gru_lm, transformer_lm
from ppo_jax.rlhf.model import TokenModel
from ppo_jax.rlhf.preference import PreferenceTask
from ppo_jax.rlhf.transformer import Transformer


class RLSetup(NamedTuple):
    """Static description of an RL run: settings, task and one `LanguageModel` per role."""

    config: RLHFConfig
    task: Any
    policy: LanguageModel  # actor; the reference is the same functions with frozen parameters
    critic: LanguageModel | None  # value_fn gives V(s_t) (PPO); None for critic-free algorithms
    reward_model: LanguageModel | None  # value_fn read at the last token; None: the task's reward
    sharding: Any = None  # `sharding.ParamSharding`: parameters and batches over a mesh; None: one device


def make_task(config: RLHFConfig):
    """The task object named by `config.task`."""
    if config.task.startswith("jsonl:"):
        return hf_model.jsonl_task(config)
    if config.task == "arithmetic":
        return ArithmeticTask(config.digits, config.corpus_accuracy)
    return PreferenceTask(
        letters=config.vocab_size,
        prompt_len=config.prompt_len,
        completion_len=config.completion_len,
        run_prob=config.corpus_run_prob,
        temperature=config.corpus_temperature,
        eos_prob=config.corpus_eos_prob,
        seed=config.seed,
    )


def make_lm(config: RLHFConfig, task) -> LanguageModel:
    """The model named by `config.model`, sized for the task's vocabulary and lengths."""
    if hf_model.is_checkpoint(config):
        return hf_model.hf_lm(config, task)
    if config.model == "gru":
        return gru_lm(TokenModel(task.vocab_size, config.hidden_dim))
    module = Transformer(
        vocab_size=task.vocab_size,
        max_len=task.prompt_len + task.completion_len,
        d_model=config.d_model,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        positions=config.positions,
    )
    return transformer_lm(module)


@functools.cache
def make_setup(config: RLHFConfig) -> RLSetup:
    """The shipped setup (cached: equal configs give the same object, hence one compile)."""
    task = make_task(config)
    lm = make_lm(config, task)
    critic = lm if config.algorithm.critic else None
    mesh = sharding.make_sharding() if config.shard_params else None
    return RLSetup(config, task, lm, critic, lm if task.needs_reward_model else None, mesh)


def join(prompts: jax.Array, completions: jax.Array) -> jax.Array:
    """prompt + completion tokens [B, P + L]."""
    return jnp.concatenate([prompts, completions], axis=1)


def completion_logits(lm: LanguageModel, params: Any, prompts: jax.Array, completions: jax.Array) -> jax.Array:
    """Teacher-forced logits of π(·|s_t) for the completion tokens t = 0..L−1: [B, L, V]
    (read at positions P − 1 .. P + L − 2)."""
    tokens = join(prompts, completions[:, :-1])
    return lm.logits_fn(params, tokens)[:, prompts.shape[1] - 1 :]


def completion_values(lm: LanguageModel, params: Any, prompts: jax.Array, completions: jax.Array) -> jax.Array:
    """Scalar head at the states s_0..s_{L−1} of the completion: [B, L]."""
    tokens = join(prompts, completions[:, :-1])
    return lm.value_fn(params, tokens)[:, prompts.shape[1] - 1 :]


def sequence_score(lm: LanguageModel, params: Any, prompts: jax.Array, completions: jax.Array, mask) -> jax.Array:
    """Reward-model score r_φ(x, y): the scalar head after the last valid token (EOS, or the last
    token of a truncated completion): [B]."""
    scalars = lm.value_fn(params, join(prompts, completions))
    index = prompts.shape[1] + last_token_index(mask)
    return jnp.take_along_axis(scalars, index[:, None], axis=1)[:, 0]
