"""Phase 2: RL fine-tuning of a language model (PPO, GRPO, RLOO, REINFORCE, REINFORCE++; GSPO and
CISPO losses), as one program.

`finetune(setup, params, frozen, key)` runs `rl_updates` updates inside one jitted `lax.scan`;
each update is KV-cached sampling (a `lax.while_loop`), scoring (task rule or reward model),
targets (`rollout`), and `num_epochs` × `num_minibatches` gradient steps over shuffled completions
(`engine.sgd.sgd_epochs`, the same minibatch SGD as the classic trainer). Nothing leaves the
program but an optional per-update host callback, so `jax.vmap` over keys runs several seeds.

Loss of one minibatch, per valid token t of completion b (mask m), aggregated with the weights of
`config.loss_aggregation` (`core.token_losses.AGGREGATIONS`):

    ℓ_{b,t} = ℓ^pg_{b,t} + β k_{b,t} [KL in the loss] − c_e H_{b,t}
    L = Σ w_{b,t} ℓ_{b,t} + c_v Σ w_{b,t} ½ (V(s_{b,t}) − G_{b,t})²     [critic]

with ℓ^pg the `config.policy_loss` (`core.policy_losses.POLICY_LOSSES`; vanilla:
−min(ρ Â, clip(ρ, 1 − ε_low, 1 + ε_high) Â), ρ = π_θ/π_old per token) and k the chosen KL
estimator of KL[π_θ ‖ π_ref] (Shao et al. 2024, eq. 3 with k3 and seq-mean-token-mean: GRPO as
published). PPO's token advantages are whitened over the valid tokens of each minibatch. Every
log-prob is set to 0 after EOS before any exp (`token_losses.masked_values`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ppo_jax.core.distributions import categorical_entropy, categorical_log_prob
from ppo_jax.core.losses import kl_k3_terms
from ppo_jax.core.optim import make_optimizer
from ppo_jax.core.policy_losses import POLICY_LOSSES
from ppo_jax.core.token_losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    masked_mean,
    masked_values,
    masked_whiten,
    value_loss_tokens,
)
from ppo_jax.engine.sgd import OptCarry, sgd_epochs, shuffle_rows
from ppo_jax.rlhf import lora, sharding
from ppo_jax.rlhf.config import RLHyperparams
from ppo_jax.rlhf.pretrain import Callback
from ppo_jax.rlhf.rollout import Frozen, RLParams, Rollout, TrainBatch, collect, train_batch
from ppo_jax.rlhf.setup import RLSetup, completion_logits, completion_values


class RLState(NamedTuple):
    """Carry of the RL phase."""

    params: RLParams
    opt_state: Any
    key: jax.Array
    update: jax.Array  # int32, updates done


class FinetuneResult(NamedTuple):
    """Fine-tuned parameters and per-update metrics (each [rl_updates])."""

    params: RLParams
    history: dict[str, jax.Array]


def rl_loss(setup: RLSetup, hp: RLHyperparams, params: RLParams, mb: TrainBatch):
    """The loss of the module docstring on one minibatch: (loss, metrics)."""
    config = setup.config
    logits = completion_logits(setup.policy, params.policy, mb.prompts, mb.completions)
    # Every log-prob is 0 after EOS before any exp: no inf · 0 from a near-impossible padding token.
    log_prob, old_log_prob, ref_log_prob = (
        masked_values(x, mb.mask) for x in (categorical_log_prob(logits, mb.completions), mb.log_prob, mb.ref_log_prob)
    )
    entropy = masked_values(categorical_entropy(logits), mb.mask)
    weights = AGGREGATIONS[config.loss_aggregation](mb.mask)
    advantages = masked_whiten(mb.advantages, mb.mask) if setup.critic is not None else mb.advantages
    policy_loss_fn = POLICY_LOSSES[config.policy_loss]
    surrogate, clipped = policy_loss_fn(log_prob, old_log_prob, advantages, mb.mask, hp.clip_eps_low, hp.clip_eps_high)
    kl = KL_ESTIMATORS[config.kl_estimator_name](log_prob, ref_log_prob)
    kl_weight = 0.0 if config.kl_in_reward else hp.kl_coef
    policy_loss = aggregate(surrogate, weights)
    kl_loss = aggregate(kl, weights)
    loss = policy_loss + kl_weight * kl_loss - hp.ent_coef * aggregate(entropy, weights)
    detached = lax.stop_gradient(log_prob)
    metrics = {
        "policy_loss": policy_loss,
        "kl_loss": lax.stop_gradient(kl_loss),
        # KL[π_old ‖ π_θ]: the tokens were sampled from π_old
        "approx_kl": masked_mean(kl_k3_terms(old_log_prob, detached), mb.mask),
        "clip_frac": masked_mean(lax.stop_gradient(clipped), mb.mask),
    }
    if setup.critic is not None:
        values = completion_values(setup.critic, params.critic, mb.prompts, mb.completions)
        clip = hp.clip_eps_low if config.clip_value_loss else None
        value_loss = aggregate(value_loss_tokens(values, mb.values, mb.returns, clip), weights)
        loss = loss + hp.vf_coef * value_loss
        metrics["value_loss"] = value_loss
    return loss, metrics


def rl_optimizer(setup: RLSetup, hp: RLHyperparams) -> optax.GradientTransformation:
    """`core.optim.make_optimizer` at `rl_lr` with Adam eps 1e-5, over the trained part of the
    parameters (`trained_part`: with LoRA, the adapters and the value head only)."""
    return make_optimizer(hp.rl_lr, setup.config.max_grad_norm, eps=1e-5)


def trained_part(params: RLParams) -> RLParams:
    """What the RL state carries and the optimizer updates: all of a fully fine-tuned model; of a
    LoRA model only its adapters and value head (`lora.trainable_part`), the base staying in
    `Frozen.reference` alone (one copy, no gradient, no optimizer state)."""
    return RLParams(lora.trainable_part(params.policy), lora.trainable_part(params.critic))


def full_params(params: RLParams, reference: Any) -> RLParams:
    """The inverse of `trained_part`: LoRA parts get the reference's base weights filled in."""
    return RLParams(lora.with_base(params.policy, reference), lora.with_base(params.critic, reference))


def trained_loss(setup: RLSetup, hp: RLHyperparams, reference: Any, params: RLParams, mb: TrainBatch):
    """`rl_loss` as a function of the trained part only (its gradient has no base-weight leaves)."""
    return rl_loss(setup, hp, full_params(params, reference), mb)


def rl_prompts(setup: RLSetup, key: jax.Array) -> jax.Array:
    """The prompts of one update [rl_batch, P] from the training split: distinct for PPO, each
    repeated `group_size` times in a row for the group algorithms."""
    config = setup.config
    prompts = setup.task.prompts(key, config.rl_prompts)
    return jnp.repeat(prompts, config.group_size, axis=0) if config.grouped else prompts


def rollout_metrics(rollout: Rollout) -> dict[str, jax.Array]:
    """Means over a sampled batch: reward, true reward, exact KL, entropy, length, truncated."""
    return {
        "reward": jnp.mean(rollout.reward),
        "true_reward": jnp.mean(rollout.true_reward),
        "kl": jnp.mean(rollout.kl),
        "entropy": masked_mean(rollout.entropy, rollout.mask),
        "length": jnp.mean(jnp.sum(rollout.mask, axis=1)),
        "truncated": jnp.mean(rollout.truncated.astype(jnp.float32)),
    }


# Bits of the per-update `nonfinite` metric: which quantities held NaN or Inf.
NONFINITE_FLAGS = {1: "loss", 2: "gradients", 4: "parameters", 8: "sampled log-probs or rewards"}


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def nonfinite_code(losses: dict, params: RLParams, rollout: Rollout) -> jax.Array:
    """Bitmask (`NONFINITE_FLAGS`) of the quantities holding NaN/Inf in this update; 0 if none."""
    flags = (
        (_all_finite({k: v for k, v in losses.items() if k != "grad_norm"}), 1),
        (_all_finite(losses["grad_norm"]), 2),
        (_all_finite(params), 4),
        (_all_finite((rollout.log_prob, rollout.ref_log_prob, rollout.reward)), 8),
    )
    return sum(jnp.where(ok, 0, bit) for ok, bit in flags).astype(jnp.float32)


def describe_nonfinite(code: int) -> str:
    """Names of the quantities in a `nonfinite` bitmask."""
    return ", ".join(name for bit, name in NONFINITE_FLAGS.items() if int(code) & bit)


def rl_update(setup: RLSetup, callback: Callback | None, hp: RLHyperparams, frozen: Frozen, state: RLState, _=None):
    """One update: sample and score a batch, then epochs of minibatch steps. (state, metrics)."""
    config = setup.config
    key, key_prompt, key_sample, key_epochs = jax.random.split(state.key, 4)
    prompts = sharding.constrain_batch(rl_prompts(setup, key_prompt), setup.sharding)
    rollout = collect(setup, hp, full_params(state.params, frozen.reference), frozen, prompts, key_sample)
    batch, left_out = train_batch(setup, hp, rollout)
    loss = functools.partial(trained_loss, setup, hp, frozen.reference)
    split = functools.partial(shuffle_rows, config.num_minibatches)
    carry = OptCarry(state.params, state.opt_state)
    carry, losses = sgd_epochs(loss, rl_optimizer(setup, hp), carry, batch, key_epochs, config.num_epochs, split)
    carry = sharding.constrain(carry, setup.sharding)
    update = state.update + 1
    metrics = {f"train_{name}": jnp.mean(value) for name, value in losses.items()}
    metrics.update(rollout_metrics(rollout), left_out=left_out)
    metrics["nonfinite"] = nonfinite_code(losses, carry.params, rollout)
    if callback is not None:
        jax.debug.callback(functools.partial(callback, "rl"), update, metrics)
    return RLState(carry.params, carry.opt_state, key, update), metrics


def finetune(
    setup: RLSetup,
    params: RLParams,
    frozen: Frozen,
    key: jax.Array,
    callback: Callback | None = None,
    hp: RLHyperparams | None = None,
) -> FinetuneResult:
    """Phase 2: `rl_updates` updates of `setup.config.algo` from `params` (the pretrained policy,
    and the critic for PPO).

    `hp` defaults to `setup.config.rl_hyperparams()`. Per-update metrics, measured on the batch
    sampled at the start of the update: reward (what RL maximises), true_reward (the task's own:
    exact match or hidden rule), kl (exact KL to π_ref per completion), entropy (per token),
    length (valid tokens), truncated (fraction without EOS), left_out (fraction masked out of the
    loss), the means of the minibatch losses as train_* (clip_frac, approx_kl, ...) and nonfinite
    (a bitmask of `NONFINITE_FLAGS`, 0 when every quantity is finite).

    Returns `FinetuneResult(params, history)`: the fine-tuned `RLParams` (policy; critic for PPO,
    else None) and those metrics, each [rl_updates] (a leading seed axis under `jax.vmap`).
    """
    hp = setup.config.rl_hyperparams() if hp is None else hp
    params, frozen = sharding.place((params, frozen), setup.sharding)
    result = _finetune(setup, callback, hp, params, frozen, key)
    return result._replace(params=full_params(result.params, frozen.reference))  # LoRA: outside the program


def init_rl_state(setup: RLSetup, hp: RLHyperparams, params: RLParams, key: jax.Array) -> RLState:
    """The RL carry before the first update: the trained part of `params` (`trained_part`), fresh
    optimizer state for it, update 0 (on the mesh of `setup.sharding` when there is one)."""
    params = trained_part(params)
    carry = sharding.constrain(OptCarry(params, rl_optimizer(setup, hp).init(params)), setup.sharding)
    return RLState(carry.params, carry.opt_state, key, jnp.int32(0))


def scan_updates(setup: RLSetup, callback, hp: RLHyperparams, frozen: Frozen, state: RLState, length: int):
    """`length` updates from `state`: (state, metrics [length]). The RNG key is in the state, so
    any split of the updates into consecutive calls gives the same result."""
    update = functools.partial(rl_update, setup, callback, hp, frozen)
    return lax.scan(update, state, None, length=length)


@functools.partial(jax.jit, static_argnames=("setup", "callback"))
def _finetune(setup: RLSetup, callback, hp: RLHyperparams, params: RLParams, frozen: Frozen, key: jax.Array):
    state = init_rl_state(setup, hp, params, key)
    state, history = scan_updates(setup, callback, hp, frozen, state, setup.config.rl_updates)
    return FinetuneResult(state.params, history)  # the trained part: no copy of a LoRA base out


class EvalStats(NamedTuple):
    """Means over the evaluation prompts (one sampled completion each)."""

    true_reward: jax.Array  # exact-match accuracy (arithmetic) or hidden rule (preference)
    reward: jax.Array  # the RL reward (normalised learned reward for the preference task)
    kl: jax.Array  # exact KL to π_ref per completion, nats
    length: jax.Array  # valid tokens per completion


@functools.partial(jax.jit, static_argnames=("setup",))
def evaluate(setup: RLSetup, policy: Any, frozen: Frozen, prompts: jax.Array, key: jax.Array):
    """Sample one completion per prompt with `policy` and measure it: (EvalStats, Rollout)."""
    setup = setup._replace(critic=None)
    policy = lora.with_base(policy, frozen.reference)  # a LoRA policy may be its trained part alone
    rollout = collect(setup, setup.config.rl_hyperparams(), RLParams(policy, None), frozen, prompts, key)
    m = rollout_metrics(rollout)
    return EvalStats(m["true_reward"], m["reward"], m["kl"], m["length"]), rollout
