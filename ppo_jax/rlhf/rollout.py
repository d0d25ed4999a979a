"""Sampling and scoring a batch of completions, and the training targets of each algorithm.

The token MDP: the state s_t is the prompt plus the completion tokens so far, the action is the
next token y_t, and the episode ends at the completion's last valid token (its EOS, or token L − 1
of a truncated completion). The sequence reward R arrives there (delayed, sentence-level).

- PPO (critic): per-token reward r_t = −β k_t (if the KL goes into the reward) plus R at the last
  token, GAE over the tokens with the critic V(s_t) (Ouyang et al. 2022; Schulman et al. 2016).
- GRPO, RLOO, REINFORCE (no critic): one advantage per completion from its sequence reward and a
  baseline (`core.grpo.SEQUENCE_ADVANTAGES`), the same for all its tokens.
- REINFORCE++ (no critic): the per-token reward of PPO, its return to go, normalised over the
  whole batch (`core.policy_losses.reinforce_pp_advantages`).

Truncated completions (no EOS within L tokens) are kept as they are, penalised (R − penalty), or
masked out of the loss. With `skip_equal_groups`, groups whose rewards are all equal are masked
out too (DAPO's dynamic sampling, without refilling the batch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.distributions import categorical_entropy, categorical_kl, categorical_log_prob
from ppo_jax.core.grpo import SEQUENCE_ADVANTAGES, equal_reward_groups
from ppo_jax.core.losses import gae
from ppo_jax.core.policy_losses import reinforce_pp_advantages
from ppo_jax.core.token_losses import (
    KL_ESTIMATORS,
    completion_mask,
    is_truncated,
    last_token_index,
    masked_values,
    token_rewards,
)
from ppo_jax.rlhf import sharding
from ppo_jax.rlhf.config import RLHyperparams
from ppo_jax.rlhf.setup import RLSetup, completion_logits, completion_values, sequence_score


class RLParams(NamedTuple):
    """What RL trains: the policy and, for PPO, the critic (None without one)."""

    policy: Any
    critic: Any


class Frozen(NamedTuple):
    """What RL reads but never changes: reference policy, reward model and its score statistics."""

    reference: Any  # π_ref parameters (the pretrained policy)
    reward: Any  # reward-model parameters (None for a verifiable reward)
    reward_mean: jax.Array  # learned rewards are (r_φ − mean) / std
    reward_std: jax.Array


class Rollout(NamedTuple):
    """A batch of sampled completions and what was measured on them; per-token fields [B, L]."""

    prompts: jax.Array  # [B, P]
    completions: jax.Array  # [B, L], EOS after the first EOS
    mask: jax.Array  # valid tokens: up to and including the first EOS
    log_prob: jax.Array  # log π_old(y_t|s_t)
    ref_log_prob: jax.Array  # log π_ref(y_t|s_t)
    values: jax.Array  # V_old(s_t) (zeros without a critic)
    entropy: jax.Array  # H[π_old(·|s_t)]
    reward: jax.Array  # [B] sequence reward R used by RL (truncation penalty applied)
    true_reward: jax.Array  # [B] the task's own reward: exact match, or the hidden rule
    kl: jax.Array  # [B] Σ_t m_t KL(π_old(·|s_t) ‖ π_ref(·|s_t)), exact, nats per completion
    truncated: jax.Array  # [B] bool: no EOS within L tokens


class TrainBatch(NamedTuple):
    """What the loss reads per completion; token fields [B, L]."""

    prompts: jax.Array
    completions: jax.Array
    mask: jax.Array  # loss mask: valid tokens of the completions that take part
    log_prob: jax.Array
    ref_log_prob: jax.Array
    advantages: jax.Array
    values: jax.Array
    returns: jax.Array


def task_reward(setup: RLSetup, prompts, completions) -> jax.Array:
    """The task's reward [B], its operands and result whole on every device of a parameter mesh
    (a text reward is a host callback)."""
    reward = setup.task.reward(*sharding.replicate((prompts, completions), setup.sharding))
    return sharding.replicate(reward, setup.sharding)


def sequence_reward(setup: RLSetup, frozen: Frozen, prompts, completions, mask) -> jax.Array:
    """R [B]: the normalised reward-model score, or the task's verifiable reward."""
    if setup.reward_model is None:
        return task_reward(setup, prompts, completions)
    score = sequence_score(setup.reward_model, frozen.reward, prompts, completions, mask)
    return (score - frozen.reward_mean) / frozen.reward_std


class TokenScores(NamedTuple):
    """Per completion token [B, L], before masking: log π_θ(y_t), log π_ref(y_t), the entropy of
    π_θ, KL(π_θ ‖ π_ref) at the token's state, and the critic's value (0 without a critic)."""

    log_prob: jax.Array
    ref_log_prob: jax.Array
    entropy: jax.Array
    kl: jax.Array
    values: jax.Array


def token_scores(setup: RLSetup, params: RLParams, frozen: Frozen, prompts, completions) -> TokenScores:
    """`TokenScores` of completions [B, L] after prompts [B, P], from the policy's, the reference's
    and the critic's teacher-forced passes ([B, L, V] logits of each model)."""
    logits = completion_logits(setup.policy, params.policy, prompts, completions)
    ref_logits = completion_logits(setup.policy, frozen.reference, prompts, completions)
    values = jnp.zeros(completions.shape)
    if setup.critic is not None:
        values = completion_values(setup.critic, params.critic, prompts, completions)
    return TokenScores(
        categorical_log_prob(logits, completions),
        categorical_log_prob(ref_logits, completions),
        categorical_entropy(logits),
        categorical_kl(logits, ref_logits),
        values,
    )


def score_in_chunks(setup: RLSetup, params: RLParams, frozen: Frozen, prompts, completions) -> TokenScores:
    """`token_scores` of `config.score_batch` rows at a time (`lax.map` with that batch size: the
    logits of one chunk [n, L, V] exist at once instead of the batch's); 0 or ≥ B: one pass."""
    n = setup.config.score_batch
    if not n or n >= prompts.shape[0]:
        return token_scores(setup, params, frozen, prompts, completions)

    def one_row(row):
        scores = token_scores(setup, params, frozen, row[0][None], row[1][None])
        return jax.tree.map(lambda x: x[0], scores)

    return lax.map(one_row, (prompts, completions), batch_size=n)


def collect(setup: RLSetup, hp: RLHyperparams, params: RLParams, frozen: Frozen, prompts, key) -> Rollout:
    """Sample one completion per prompt row from π_θ and score it with every model and the task."""
    task = setup.task
    completions = setup.policy.sample_fn(params.policy, prompts, key, task.completion_len, task.eos_id)
    mask = completion_mask(completions, task.eos_id)
    scores = score_in_chunks(setup, params, frozen, prompts, completions)
    truncated = is_truncated(completions, task.eos_id)
    reward = sequence_reward(setup, frozen, prompts, completions, mask)
    if setup.config.truncated_completions == "penalise":
        reward = reward - hp.truncation_penalty * truncated
    return Rollout(
        prompts=prompts,
        completions=completions,
        mask=mask,
        log_prob=masked_values(scores.log_prob, mask),
        ref_log_prob=masked_values(scores.ref_log_prob, mask),
        values=masked_values(scores.values, mask),
        entropy=masked_values(scores.entropy, mask),
        reward=reward,
        true_reward=task_reward(setup, prompts, completions),
        kl=jnp.sum(masked_values(scores.kl, mask), axis=1),
        truncated=truncated,
    )


def ppo_targets(hp: RLHyperparams, kl_coef, rollout: Rollout, kl: jax.Array) -> tuple[jax.Array, jax.Array]:
    """GAE over the tokens of each completion; the last valid token ends the episode (no bootstrap),
    tokens after it get zero reward and are masked. Returns (advantages, returns), each [B, L]."""
    rewards = token_rewards(rollout.reward, kl, rollout.mask, kl_coef)
    values = rollout.values
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    last = jnp.arange(values.shape[1])[None, :] == last_token_index(rollout.mask)[:, None]
    # gae is time-major: [L, B].
    adv, ret = gae(rewards.T, values.T, next_values.T, last.T, jnp.zeros_like(last.T), hp.gamma, hp.gae_lambda)
    return adv.T * rollout.mask, ret.T * rollout.mask


def group_targets(setup: RLSetup, kl_coef, rollout: Rollout, kl: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sequence-level advantages broadcast over tokens [B, L], and the per-completion loss weight
    [B] (0 for the groups that `skip_equal_groups` leaves out). Rows g·G .. g·G + G − 1 share a prompt."""
    config = setup.config
    rewards = rollout.reward - kl_coef * jnp.sum(kl * rollout.mask, axis=1)
    grouped = rewards.reshape(-1, config.group_size)
    adv = SEQUENCE_ADVANTAGES[config.algo](grouped, scale=config.scale_advantages).reshape(-1)
    keep = jnp.ones_like(rewards)
    if config.skip_equal_groups:
        equal = equal_reward_groups(rollout.reward.reshape(-1, config.group_size))
        keep = jnp.repeat(1.0 - equal, config.group_size)
    return adv[:, None] * rollout.mask, keep


def train_batch(setup: RLSetup, hp: RLHyperparams, rollout: Rollout) -> tuple[TrainBatch, jax.Array]:
    """The training data of one update and the fraction of completions left out of the loss."""
    config = setup.config
    kl_coef = hp.kl_coef if config.kl_in_reward else 0.0
    kl = KL_ESTIMATORS[config.kl_estimator_name](rollout.log_prob, rollout.ref_log_prob) * rollout.mask
    keep = jnp.ones(rollout.reward.shape)
    if config.truncated_completions == "mask":
        keep = keep * (1.0 - rollout.truncated)
    returns = jnp.zeros(kl.shape)
    if setup.critic is not None:
        advantages, returns = ppo_targets(hp, kl_coef, rollout, kl)
    elif config.algorithm.token_returns:
        advantages = reinforce_pp_advantages(rollout.reward, kl, rollout.mask, kl_coef, hp.gamma, keep)
    else:
        advantages, group_keep = group_targets(setup, kl_coef, rollout, kl)
        keep = keep * group_keep
    batch = TrainBatch(
        prompts=rollout.prompts,
        completions=rollout.completions,
        mask=rollout.mask * keep[:, None],
        log_prob=rollout.log_prob,
        ref_log_prob=rollout.ref_log_prob,
        advantages=advantages,
        values=rollout.values,
        returns=returns,
    )
    return batch, 1.0 - jnp.mean(keep)
