"""Phase 1 (next-token pretraining) and the reward model (Bradley–Terry on preference pairs).

Each phase is one jitted `lax.scan` over gradient steps; progress leaves through an optional host
callback `callback(phase, step, metrics)` every `config.log_every` steps (and at the last step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ppo_jax.core.distributions import categorical_log_prob
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.model import TokenModel, completion_outputs, init_params, sequence_score
from ppo_jax.rlhf.task import Corpus, PreferencePairs, generate_completions, preference_pairs, sample_prompts

Callback = Callable[[str, int, dict[str, Any]], None]


class PhaseState(NamedTuple):
    """Carry of a supervised phase: parameters, optimizer state, RNG key, steps done."""

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array  # int32


class PhaseResult(NamedTuple):
    """Trained parameters and per-step metrics (each [steps])."""

    params: Any
    history: dict[str, jax.Array]


class RewardModelResult(NamedTuple):
    """Reward-model parameters, per-step metrics and the accuracy on held-out pairs."""

    params: Any
    history: dict[str, jax.Array]
    eval_accuracy: jax.Array  # scalar: fraction of held-out non-tied pairs ordered correctly


def make_model(config: RLHFConfig) -> TokenModel:
    return TokenModel(config.vocab_size, config.hidden_dim)


def next_token_loss(model: TokenModel, params: Any, prompts: jax.Array, completions: jax.Array) -> jax.Array:
    """Cross-entropy of the completion tokens, L = −mean_{b,i} log π(y_{b,i} | x_b, y_{b,<i}).

    prompts [B, P], completions [B, L] -> scalar. The prompt tokens are not modelled.
    """
    logits = completion_outputs(model, params, prompts, completions).logits
    return -jnp.mean(categorical_log_prob(logits, completions))


def bradley_terry_loss(score_first: jax.Array, score_second: jax.Array, label: jax.Array) -> jax.Array:
    """Bradley–Terry preference loss (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1).

        P(first ≻ second) = σ(r_1 − r_2)
        L = −mean[ y · log σ(r_1 − r_2) + (1 − y) · log σ(r_2 − r_1) ]

    score_first r_1, score_second r_2, label y [N] (1: first preferred, 0: second, 0.5: tie).
    Returns a scalar; log 2 when r_1 = r_2.
    """
    margin = score_first - score_second
    return -jnp.mean(label * jax.nn.log_sigmoid(margin) + (1.0 - label) * jax.nn.log_sigmoid(-margin))


def preference_accuracy(score_first: jax.Array, score_second: jax.Array, label: jax.Array) -> jax.Array:
    """Fraction of non-tied pairs (label ≠ 0.5) whose scores order them as the label does; [N] -> scalar."""
    decided = label != 0.5
    correct = jnp.logical_and(decided, (score_first > score_second) == (label > 0.5))
    return jnp.sum(correct) / jnp.maximum(jnp.sum(decided), 1)


def make_optimizer(lr: float, max_grad_norm: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def report(callback: Callback | None, phase: str, every: int, total: int, step: jax.Array, metrics) -> None:
    """Send `metrics` to the host every `every` steps and at the last one (nothing without a callback)."""
    if callback is None:
        return
    emit = lambda: jax.debug.callback(functools.partial(callback, phase), step, metrics)  # noqa: E731
    lax.cond(jnp.logical_or(step % every == 0, step == total), emit, lambda: None)


def pretrain_step(config: RLHFConfig, callback, corpus: Corpus, state: PhaseState, _=None):
    """One next-token step on a fresh batch of corpus sequences."""
    model = make_model(config)
    optimizer = make_optimizer(config.pretrain_lr, config.max_grad_norm)
    key, key_prompt, key_text = jax.random.split(state.key, 3)
    prompts = sample_prompts(key_prompt, config.pretrain_batch, config.prompt_len, config.vocab_size)
    completions = generate_completions(key_text, corpus, prompts, config.completion_len)
    loss, grads = jax.value_and_grad(functools.partial(next_token_loss, model))(state.params, prompts, completions)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    step = state.step + 1
    metrics = {"loss": loss}
    report(callback, "pretrain", config.log_every, config.pretrain_steps, step, metrics)
    return PhaseState(optax.apply_updates(state.params, updates), opt_state, key, step), metrics


@functools.partial(jax.jit, static_argnames=("config", "callback"))
def pretrain(config: RLHFConfig, corpus: Corpus, key: jax.Array, callback: Callback | None = None) -> PhaseResult:
    """Phase 1: `pretrain_steps` of next-token prediction on the generated corpus."""
    key_init, key = jax.random.split(key)
    params = init_params(make_model(config), key_init)
    opt_state = make_optimizer(config.pretrain_lr, config.max_grad_norm).init(params)
    state = PhaseState(params, opt_state, key, jnp.int32(0))
    step = functools.partial(pretrain_step, config, callback, corpus)
    state, history = lax.scan(step, state, None, length=config.pretrain_steps)
    return PhaseResult(state.params, history)


def pair_scores(model: TokenModel, params: Any, pairs: PreferencePairs) -> tuple[jax.Array, jax.Array]:
    """(r_φ(x, first), r_φ(x, second)) [N] each, both scored in one pass."""
    prompts = jnp.concatenate([pairs.prompts, pairs.prompts], axis=0)
    scores = sequence_score(model, params, prompts, jnp.concatenate([pairs.first, pairs.second], axis=0))
    return jnp.split(scores, 2)


def reward_model_loss(model: TokenModel, params: Any, pairs: PreferencePairs):
    """Bradley–Terry loss of a batch of pairs and its accuracy: (loss, {'accuracy'})."""
    first, second = pair_scores(model, params, pairs)
    return bradley_terry_loss(first, second, pairs.label), {"accuracy": preference_accuracy(first, second, pairs.label)}


def reward_model_step(config: RLHFConfig, callback, pairs: PreferencePairs, state: PhaseState, _=None):
    """One Bradley–Terry step on a minibatch drawn (with replacement) from the training pairs."""
    model = make_model(config)
    optimizer = make_optimizer(config.rm_lr, config.max_grad_norm)
    key, key_batch = jax.random.split(state.key)
    index = jax.random.randint(key_batch, (config.rm_batch,), 0, config.rm_pairs)
    batch = jax.tree.map(lambda x: x[index], pairs)
    grad_fn = jax.value_and_grad(functools.partial(reward_model_loss, model), has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    step = state.step + 1
    metrics = {"loss": loss, "accuracy": aux["accuracy"]}
    report(callback, "reward_model", config.log_every, config.rm_steps, step, metrics)
    return PhaseState(optax.apply_updates(state.params, updates), opt_state, key, step), metrics


@functools.partial(jax.jit, static_argnames=("config", "callback"))
def train_reward_model(
    config: RLHFConfig, corpus: Corpus, init: Any, key: jax.Array, callback: Callback | None = None
) -> RewardModelResult:
    """Label `rm_pairs` comparisons with the hidden rule, fit r_φ (initialised from `init`, the
    pretrained policy, scalar head at zero) by Bradley–Terry, and score `rm_eval_pairs` held-out ones."""
    key_train, key_eval, key = jax.random.split(key, 3)
    pairs = preference_pairs(key_train, corpus, config.rm_pairs, config.prompt_len, config.completion_len)
    held_out = preference_pairs(key_eval, corpus, config.rm_eval_pairs, config.prompt_len, config.completion_len)
    opt_state = make_optimizer(config.rm_lr, config.max_grad_norm).init(init)
    state = PhaseState(init, opt_state, key, jnp.int32(0))
    step = functools.partial(reward_model_step, config, callback, pairs)
    state, history = lax.scan(step, state, None, length=config.rm_steps)
    first, second = pair_scores(make_model(config), state.params, held_out)
    return RewardModelResult(state.params, history, preference_accuracy(first, second, held_out.label))
