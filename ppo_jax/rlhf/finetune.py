"""Phase 2: RL fine-tuning of the pretrained policy against the learned reward, PPO or GRPO.

The token MDP: the state s_i is the prompt plus the completion tokens so far, the action is the
next token y_i, and the episode ends after L tokens. The learned reward r_φ(x, y) arrives only at
the end (delayed, sequence-level); the policy is kept near the frozen reference π_ref (the
pretrained policy) by β·KL, as in Ouyang et al. 2022 and Shao et al. 2024:

- PPO (with a critic): per-token reward r_i = −β (log π_old(y_i|s_i) − log π_ref(y_i|s_i)) plus
  r_φ(x, y) at i = L − 1; GAE over tokens with the value head; the clipped PPO loss
  (`ppo_jax.core.losses.ppo_loss`).
- GRPO (no critic): G completions per prompt, group-relative advantages of r_φ, and the clipped
  loss with the k3 penalty β·KL[π_θ ‖ π_ref] in the loss (`ppo_jax.core.grpo.grpo_loss`).

The whole phase is one jitted `lax.scan` over updates; each update is a sampling scan, scoring,
and `num_epochs` × `num_minibatches` gradient steps over shuffled completions (`engine.sgd`,
the same minibatch SGD as the classic trainer).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ppo_jax.core.distributions import categorical_entropy, categorical_kl, categorical_log_prob
from ppo_jax.core.grpo import group_advantages, grpo_loss, repeat_prompts
from ppo_jax.core.losses import LossInputs, gae, normalize_advantages, ppo_loss
from ppo_jax.engine.sgd import OptCarry, sgd_epochs, shuffle_rows
from ppo_jax.rlhf.config import RLHFConfig, RLHyperparams
from ppo_jax.rlhf.model import completion_outputs, sample_completions, sequence_score
from ppo_jax.rlhf.pretrain import Callback, make_model
from ppo_jax.rlhf.task import sample_prompts, true_reward


class Frozen(NamedTuple):
    """What RL reads but never changes: reference policy, reward model and its score statistics."""

    reference: Any  # π_ref parameters (the pretrained policy)
    reward: Any  # reward-model parameters
    reward_mean: jax.Array  # mean of r_φ over reference samples: rewards are (r_φ − mean) / std
    reward_std: jax.Array


class RLState(NamedTuple):
    """Carry of the RL phase."""

    params: Any  # policy (and, for PPO, value head) parameters
    opt_state: Any
    key: jax.Array
    update: jax.Array  # int32, updates done


class Rollout(NamedTuple):
    """A batch of sampled completions and everything measured on them; per-token fields [B, L]."""

    prompts: jax.Array  # [B, P]
    completions: jax.Array  # [B, L]
    log_prob: jax.Array  # log π_old(y_i|s_i)
    ref_log_prob: jax.Array  # log π_ref(y_i|s_i)
    values: jax.Array  # V_old(s_i) (value head; unused by GRPO)
    entropy: jax.Array  # H[π_old(·|s_i)]
    score: jax.Array  # [B] normalised learned reward (r_φ − mean) / std
    true_reward: jax.Array  # [B] hidden rule R(x, y)
    kl: jax.Array  # [B] Σ_i KL(π_old(·|s_i) ‖ π_ref(·|s_i)), exact, nats per completion


class PPOBatch(NamedTuple):
    """PPO training data per completion: token fields [B, L]."""

    prompts: jax.Array
    completions: jax.Array
    log_prob: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array


class GRPOBatch(NamedTuple):
    """GRPO training data per completion: token fields [B, L], advantages [B]."""

    prompts: jax.Array
    completions: jax.Array
    log_prob: jax.Array
    ref_log_prob: jax.Array
    advantages: jax.Array


class FinetuneResult(NamedTuple):
    """Fine-tuned parameters and per-update metrics (each [rl_updates])."""

    params: Any
    history: dict[str, jax.Array]


def collect(config: RLHFConfig, params: Any, frozen: Frozen, prompts: jax.Array, key: jax.Array) -> Rollout:
    """Sample one completion per prompt row from π_θ and score it with every model and the rule."""
    model = make_model(config)
    completions = sample_completions(model, params, prompts, key, config.completion_len)
    out = completion_outputs(model, params, prompts, completions)
    ref = completion_outputs(model, frozen.reference, prompts, completions)
    score = sequence_score(model, frozen.reward, prompts, completions)
    return Rollout(
        prompts=prompts,
        completions=completions,
        log_prob=categorical_log_prob(out.logits, completions),
        ref_log_prob=categorical_log_prob(ref.logits, completions),
        values=out.values,
        entropy=categorical_entropy(out.logits),
        score=(score - frozen.reward_mean) / frozen.reward_std,
        true_reward=true_reward(prompts, completions, config.vocab_size),
        kl=jnp.sum(categorical_kl(out.logits, ref.logits), axis=1),
    )


def token_rewards(score: jax.Array, log_prob: jax.Array, ref_log_prob: jax.Array, kl_coef) -> jax.Array:
    """Per-token RLHF reward with a KL penalty and a delayed sequence reward (Ouyang et al. 2022).

        r_i = −β (log π_old(y_i|s_i) − log π_ref(y_i|s_i)) + [i = L − 1] · r_φ(x, y)

    score [B], log_prob and ref_log_prob [B, L] -> [B, L]. Σ_i of the penalty is −β times the
    single-sample estimate of KL[π_old ‖ π_ref] over whole completions.
    """
    rewards = -kl_coef * (log_prob - ref_log_prob)
    return rewards.at[:, -1].add(score)


def ppo_batch(config: RLHFConfig, hp: RLHyperparams, rollout: Rollout) -> PPOBatch:
    """GAE over the tokens of each completion; the last token ends the episode (no bootstrap)."""
    rewards = token_rewards(rollout.score, rollout.log_prob, rollout.ref_log_prob, hp.kl_coef)
    values = rollout.values
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    terminated = jnp.zeros(values.shape, bool).at[:, -1].set(True)
    truncated = jnp.zeros(values.shape, bool)
    # gae is time-major: [L, B].
    adv, ret = gae(rewards.T, values.T, next_values.T, terminated.T, truncated.T, hp.gamma, hp.gae_lambda)
    return PPOBatch(rollout.prompts, rollout.completions, rollout.log_prob, values, adv.T, ret.T)


def ppo_minibatch_loss(config: RLHFConfig, hp: RLHyperparams, params: Any, mb: PPOBatch):
    """PPO loss over all tokens of a minibatch of completions, advantages normalised per minibatch."""
    out = completion_outputs(make_model(config), params, mb.prompts, mb.completions)
    flat = lambda x: x.reshape(-1)  # noqa: E731
    inputs = LossInputs(
        log_prob=flat(categorical_log_prob(out.logits, mb.completions)),
        old_log_prob=flat(mb.log_prob),
        entropy=flat(categorical_entropy(out.logits)),
        values=flat(out.values),
        old_values=flat(mb.values),
        advantages=normalize_advantages(flat(mb.advantages)),
        returns=flat(mb.returns),
    )
    return ppo_loss(inputs, hp.clip_eps, hp.vf_coef, hp.ent_coef, config.clip_value_loss)


def grpo_batch(config: RLHFConfig, hp: RLHyperparams, rollout: Rollout) -> GRPOBatch:
    """Group-relative advantages of the learned reward; rows g·G .. g·G + G − 1 share a prompt."""
    adv = group_advantages(rollout.score.reshape(-1, config.group_size)).reshape(-1)
    return GRPOBatch(rollout.prompts, rollout.completions, rollout.log_prob, rollout.ref_log_prob, adv)


def grpo_minibatch_loss(config: RLHFConfig, hp: RLHyperparams, params: Any, mb: GRPOBatch):
    """GRPO loss of a minibatch of completions, minus the optional entropy bonus."""
    logits = completion_outputs(make_model(config), params, mb.prompts, mb.completions).logits
    log_prob = categorical_log_prob(logits, mb.completions)
    loss, metrics = grpo_loss(log_prob, mb.log_prob, mb.ref_log_prob, mb.advantages, hp.clip_eps, hp.kl_coef)
    entropy = jnp.mean(categorical_entropy(logits))
    metrics["entropy"] = entropy
    return loss - hp.ent_coef * entropy, metrics


def make_optimizer(config: RLHFConfig, hp: RLHyperparams) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(hp.rl_lr, eps=1e-5))


def rl_prompts(config: RLHFConfig, key: jax.Array) -> jax.Array:
    """The prompts of one update [rl_batch, P]: distinct for PPO, each repeated G times for GRPO."""
    prompts = sample_prompts(key, config.rl_prompts, config.prompt_len, config.vocab_size)
    return repeat_prompts(prompts, config.group_size) if config.algo == "grpo" else prompts


def rl_update(config: RLHFConfig, callback: Callback | None, hp: RLHyperparams, frozen: Frozen, state: RLState, _=None):
    """One update: sample and score a batch, then epochs of minibatch steps. (state, metrics)."""
    key, key_prompt, key_sample, key_epochs = jax.random.split(state.key, 4)
    rollout = collect(config, state.params, frozen, rl_prompts(config, key_prompt), key_sample)
    if config.algo == "ppo":
        batch, loss_fn = ppo_batch(config, hp, rollout), ppo_minibatch_loss
    else:
        batch, loss_fn = grpo_batch(config, hp, rollout), grpo_minibatch_loss
    loss = functools.partial(loss_fn, config, hp)
    split = functools.partial(shuffle_rows, config.num_minibatches)
    opt = make_optimizer(config, hp)
    carry = OptCarry(state.params, state.opt_state)
    carry, losses = sgd_epochs(loss, opt, carry, batch, key_epochs, config.num_epochs, split)
    update = state.update + 1
    metrics = {f"train_{name}": jnp.mean(value) for name, value in losses.items()}
    metrics.update(
        true_reward=jnp.mean(rollout.true_reward),
        score=jnp.mean(rollout.score),
        kl=jnp.mean(rollout.kl),
        entropy=jnp.mean(rollout.entropy),
    )
    if callback is not None:
        jax.debug.callback(functools.partial(callback, "rl"), update, metrics)
    return RLState(carry.params, carry.opt_state, key, update), metrics


def finetune(
    config: RLHFConfig,
    params: Any,
    frozen: Frozen,
    key: jax.Array,
    callback: Callback | None = None,
    hp: RLHyperparams | None = None,
) -> FinetuneResult:
    """Phase 2: `rl_updates` updates of `config.algo` from `params` (the pretrained policy).

    `hp` defaults to `config.rl_hyperparams()`; the program is compiled for
    `config.static_rl_config()`, so runs that differ only in those scalars share one compile.
    Per-update metrics, measured on the batch sampled at the start of the update: true_reward
    (hidden rule), score (normalised learned reward), kl (exact KL to π_ref per completion),
    entropy (per token), and the means of the minibatch losses as train_*.
    """
    hp = config.rl_hyperparams() if hp is None else hp
    return _finetune(config.static_rl_config(), callback, hp, params, frozen, key)


@functools.partial(jax.jit, static_argnames=("config", "callback"))
def _finetune(config: RLHFConfig, callback, hp: RLHyperparams, params: Any, frozen: Frozen, key: jax.Array):
    state = RLState(params, make_optimizer(config, hp).init(params), key, jnp.int32(0))
    update = functools.partial(rl_update, config, callback, hp, frozen)
    state, history = lax.scan(update, state, None, length=config.rl_updates)
    return FinetuneResult(state.params, history)


@functools.partial(jax.jit, static_argnames=("config",))
def reward_statistics(config: RLHFConfig, reference: Any, reward: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of r_φ over `eval_prompts` completions of the reference policy."""
    key_prompt, key_sample = jax.random.split(key)
    model = make_model(config)
    prompts = sample_prompts(key_prompt, config.eval_prompts, config.prompt_len, config.vocab_size)
    completions = sample_completions(model, reference, prompts, key_sample, config.completion_len)
    scores = sequence_score(model, reward, prompts, completions)
    return jnp.mean(scores), jnp.std(scores) + 1e-6


class EvalStats(NamedTuple):
    """Means over the evaluation prompts (one sampled completion each)."""

    true_reward: jax.Array  # hidden rule R(x, y)
    score: jax.Array  # normalised learned reward
    kl: jax.Array  # exact KL to π_ref per completion, nats


@functools.partial(jax.jit, static_argnames=("config",))
def evaluate(config: RLHFConfig, params: Any, frozen: Frozen, prompts: jax.Array, key: jax.Array):
    """Sample one completion per prompt with `params` and measure it: (EvalStats, completions [B, L])."""
    rollout = collect(config, params, frozen, prompts, key)
    stats = EvalStats(jnp.mean(rollout.true_reward), jnp.mean(rollout.score), jnp.mean(rollout.kl))
    return stats, rollout
