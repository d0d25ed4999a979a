"""Phase 1 (next-token pretraining on the task's corpus) and the reward model (Bradley–Terry on
preference pairs), for any `LanguageModel`.

Each phase is a jitted `lax.scan` over gradient steps; progress leaves through an optional
callback `callback(phase, step, metrics)` every `config.log_every` steps (and at the last step):
called by the host between chunks of pretraining, from inside the reward model's program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ppo_jax.core.distributions import categorical_log_prob
from ppo_jax.core.optim import make_optimizer, warmup_cosine
from ppo_jax.core.token_losses import completion_mask, masked_mean
from ppo_jax.rlhf import ahead, hf_model
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.lm import LanguageModel
from ppo_jax.rlhf.setup import completion_logits, make_setup, sequence_score
from ppo_jax.rlhf.task import PreferencePairs

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


def next_token_loss(lm: LanguageModel, eos_id: int, params: Any, prompts: jax.Array, completions: jax.Array):
    """Cross-entropy of the completion tokens up to and including EOS,

        L = −Σ_{b,t} m_{b,t} log π(y_{b,t} | x_b, y_{b,<t}) / Σ m

    prompts [B, P], completions [B, L] (EOS-padded) -> scalar. Prompt tokens are not modelled.
    """
    logits = completion_logits(lm, params, prompts, completions)
    return -masked_mean(categorical_log_prob(logits, completions), completion_mask(completions, eos_id))


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


def pretrain_optimizer(config: RLHFConfig) -> optax.GradientTransformation:
    """`core.optim.make_optimizer` at `pretrain_lr`, warmed up and cosine-decayed over `pretrain_steps`."""
    steps = config.pretrain_steps
    return make_optimizer(
        warmup_cosine(config.pretrain_lr, steps) if steps else config.pretrain_lr, config.max_grad_norm
    )


def report(callback: Callback | None, phase: str, every: int, total: int, step: jax.Array, metrics) -> None:
    """Send `metrics` to the host every `every` steps and at the last one (nothing without a callback)."""
    if callback is None:
        return
    emit = lambda: jax.debug.callback(functools.partial(callback, phase), step, metrics)  # noqa: E731
    lax.cond(jnp.logical_or(step % every == 0, step == total), emit, lambda: None)


def pretrain_step(config: RLHFConfig, state: PhaseState, _=None):
    """One next-token step on a fresh batch of corpus examples."""
    setup = make_setup(config)
    optimizer = pretrain_optimizer(config)
    key, key_batch = jax.random.split(state.key)
    prompts, completions = setup.task.corpus(key_batch, config.pretrain_batch)
    loss_fn = functools.partial(next_token_loss, setup.policy, setup.task.eos_id)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, prompts, completions)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return PhaseState(optax.apply_updates(state.params, updates), opt_state, key, state.step + 1), {"loss": loss}


def pretrain(
    config: RLHFConfig, key: jax.Array, callback: Callback | None = None, chunk: Future | None = None
) -> PhaseResult:
    """Phase 1: `pretrain_steps` of next-token prediction on the task's generated corpus, from
    random parameters, or from a checkpoint's (`--model hf:PATH`, read here and passed to the
    program as an argument rather than baked into it).

    The steps run in chunks of `log_every` (one compiled program without a host callback, so JAX's
    persistent cache keeps it); `callback("pretrain", step, {"loss"})` is called by the host after
    each chunk with the loss of its last step. The key and the step count are in the carry, so the
    chunks give the same parameters as one scan over every step. `chunk`: the future of the
    compiled chunk when the caller started it (`chunk_ahead`); otherwise it is started here."""
    start = make_setup(config).policy.init(None) if hf_model.is_checkpoint(config) else None
    chunk = chunk or chunk_ahead(config, key, start)
    state = _pretrain_start(config, key, start)
    histories = []
    while int(state.step) < config.pretrain_steps:
        length = min(config.log_every, config.pretrain_steps - int(state.step))
        jitted = functools.partial(_pretrain_chunk, config, state, length)
        state, history = ahead.call(chunk if length == config.log_every else None, jitted, state)
        histories.append(history)
        if callback is not None:
            callback("pretrain", state.step, {"loss": history["loss"][-1]})
    history = {name: jnp.concatenate([h[name] for h in histories]) for name in histories[0]} if histories else {}
    return PhaseResult(state.params, history or {"loss": jnp.zeros((0,), jnp.float32)})


def chunk_ahead(config: RLHFConfig, key: jax.Array, start: Any = None) -> Future | None:
    """A future of the compiled chunk of `log_every` steps, compiled on a thread from the shapes of
    the start state while `_pretrain_start` compiles and runs (None: no full chunk to run).
    `start`: the checkpoint's parameters of an `hf:` model (None: random, from the config)."""
    if config.pretrain_steps < config.log_every:
        return None
    state = jax.eval_shape(functools.partial(_pretrain_start, config), key, start)
    return ahead.in_thread([lambda: _pretrain_chunk.lower(config, state, config.log_every).compile()])[0]


@functools.partial(jax.jit, static_argnames=("config",))
def _pretrain_start(config: RLHFConfig, key: jax.Array, start: Any) -> PhaseState:
    """The carry before the first step: random (or `start`) parameters and fresh Adam state."""
    key_init, key = jax.random.split(key)
    params = make_setup(config).policy.init(key_init) if start is None else start
    opt_state = pretrain_optimizer(config).init(params)
    return PhaseState(params, opt_state, key, jnp.int32(0))


@functools.partial(jax.jit, static_argnames=("config", "length"))
def _pretrain_chunk(config: RLHFConfig, state: PhaseState, length: int) -> tuple[PhaseState, dict[str, jax.Array]]:
    """`length` pretraining steps from `state`: (state, metrics [length])."""
    return lax.scan(functools.partial(pretrain_step, config), state, None, length)


def pair_scores(lm: LanguageModel, eos_id: int, params: Any, pairs: PreferencePairs) -> tuple[jax.Array, jax.Array]:
    """(r_φ(x, first), r_φ(x, second)) [N] each, both scored in one pass."""
    prompts = jnp.concatenate([pairs.prompts, pairs.prompts], axis=0)
    completions = jnp.concatenate([pairs.first, pairs.second], axis=0)
    scores = sequence_score(lm, params, prompts, completions, completion_mask(completions, eos_id))
    return jnp.split(scores, 2)


def reward_model_loss(lm: LanguageModel, eos_id: int, params: Any, pairs: PreferencePairs):
    """Bradley–Terry loss of a batch of pairs and its accuracy: (loss, {'accuracy'})."""
    first, second = pair_scores(lm, eos_id, params, pairs)
    return bradley_terry_loss(first, second, pairs.label), {"accuracy": preference_accuracy(first, second, pairs.label)}


def reward_model_step(config: RLHFConfig, callback, pairs: PreferencePairs, state: PhaseState, _=None):
    """One Bradley–Terry step on a minibatch drawn (with replacement) from the training pairs."""
    setup = make_setup(config)
    optimizer = make_optimizer(config.rm_lr, config.max_grad_norm)
    key, key_batch = jax.random.split(state.key)
    index = jax.random.randint(key_batch, (config.rm_batch,), 0, config.rm_pairs)
    batch = jax.tree.map(lambda x: x[index], pairs)
    loss_fn = functools.partial(reward_model_loss, setup.reward_model, setup.task.eos_id)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    step = state.step + 1
    metrics = {"loss": loss, "accuracy": aux["accuracy"]}
    report(callback, "reward_model", config.log_every, config.rm_steps, step, metrics)
    return PhaseState(optax.apply_updates(state.params, updates), opt_state, key, step), metrics


@functools.partial(jax.jit, static_argnames=("config", "callback"))
def train_reward_model(config: RLHFConfig, init: Any, key: jax.Array, callback: Callback | None = None):
    """Label `rm_pairs` comparisons with the hidden rule, fit r_φ (initialised from `init`, the
    pretrained policy, scalar head at zero) by Bradley–Terry, and score `rm_eval_pairs` held-out ones."""
    setup = make_setup(config)
    key_train, key_eval, key = jax.random.split(key, 3)
    pairs = setup.task.preference_pairs(key_train, config.rm_pairs)
    held_out = setup.task.preference_pairs(key_eval, config.rm_eval_pairs)
    opt_state = make_optimizer(config.rm_lr, config.max_grad_norm).init(init)
    state = PhaseState(init, opt_state, key, jnp.int32(0))
    state, history = lax.scan(
        functools.partial(reward_model_step, config, callback, pairs), state, None, config.rm_steps
    )
    first, second = pair_scores(setup.reward_model, setup.task.eos_id, state.params, held_out)
    return RewardModelResult(state.params, history, preference_accuracy(first, second, held_out.label))
