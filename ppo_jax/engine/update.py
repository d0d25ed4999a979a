"""One update of the training program: rollout, targets, the objective's policy step (if any),
epochs of minibatch SGD, the objective's after-update hook, and the update's metrics.

`update_step(ctx, hparams, state, reduce)` is the same function on one device and inside
`shard_map` for a run whose envs are split over devices: `reduce` (an `sgd.Collective`) averages
gradients and sums episode counts over the devices, and is the identity on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ppo_jax.config import Hyperparams, PPOConfig
from ppo_jax.core.losses import LossInputs, approx_kl_k3, clip_fraction, explained_variance, normalize_advantages
from ppo_jax.core.objectives import BatchView, Objective, UpdateStats
from ppo_jax.core.optim import linear_to_zero, make_optimizer
from ppo_jax.engine.rollout import RolloutContext, rollout
from ppo_jax.engine.sgd import LOCAL, Collective, OptCarry, sgd_epochs
from ppo_jax.policies import state_values, unroll

# Bits of the "nonfinite" metric: which quantity held a NaN or Inf in an update.
NONFINITE_FLAGS = {1: "loss", 2: "gradients", 4: "parameters", 8: "environment outputs (reward or observation)"}


class TrainState(NamedTuple):
    """The complete state of a run between updates (what a checkpoint must hold)."""

    params: Any  # the policy family's parameters
    opt_state: Any  # optax state (includes the schedule's step count)
    env: Any  # `rollout.EnvCarry`: env states, observations, episode counters, statistics, policy carry
    key: jax.Array  # RNG key for the next update
    update: jax.Array  # number of updates done, int32
    objective_state: Any  # the objective's own state (`Objective.init`; e.g. kl_penalty's beta), () if none


class TrainContext(NamedTuple):
    """Static pieces of a run, bound once by `train.make_context`."""

    config: PPOConfig
    rollout: RolloutContext
    objective: Objective
    split: Callable  # (reduce, key, Batch) -> minibatches [M, ...] (see `train.make_context`)
    callback: Callable[..., None] | None
    callback_every: int = 1  # call `callback` after every k-th update (and the last)
    unrecorded: tuple[str, ...] = ()  # parts given as objects with no importable reference (`engine.parts`)

    @property
    def policy(self) -> Any:
        return self.rollout.policy

    @property
    def dist(self) -> Any:
        return self.rollout.dist


class Batch(NamedTuple):
    """A rollout ready for the update, time-major [T, N, ...] (n envs of this device)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantages: jax.Array
    returns: jax.Array
    first: jax.Array | None  # episode starts [T, N] (recurrent policies; None otherwise)
    carry: Any  # the policy carry at the rollout's start [N, ...]; () when feed-forward


def ppo_optimizer(config: PPOConfig, hparams: Hyperparams) -> optax.GradientTransformation:
    """`core.optim.make_optimizer` with the run's lr (decayed linearly to 0 over all minibatch steps
    when `anneal_lr`), `max_grad_norm` and `adam_eps`."""
    lr: Any = hparams.lr
    if config.anneal_lr:
        lr = linear_to_zero(hparams.lr, config.num_updates * config.num_epochs * config.num_minibatches)
    return make_optimizer(lr, hparams.max_grad_norm, hparams.adam_eps)


def current_lr(config: PPOConfig, hparams: Hyperparams, update: jax.Array) -> jax.Array:
    """Learning rate at the first minibatch step of update number `update`."""
    if not config.anneal_lr:
        return hparams.lr
    steps = config.num_updates * config.num_epochs * config.num_minibatches
    count = update * config.num_epochs * config.num_minibatches
    return hparams.lr * (1.0 - count / steps)


def make_batch(ctx: TrainContext, hparams: Hyperparams, params: Any, traj, start_carry: Any) -> Batch:
    """The objective's targets over the rollout, with V(s'_t) from one batched critic pass over the
    final observations (continuing each step's policy carry)."""
    next_values = state_values(ctx.policy, params, traj.next_carry, traj.final_obs, traj.reward.shape)
    adv, ret = ctx.objective.targets(traj.reward, traj.value, next_values, traj.terminated, traj.truncated, hparams)
    first = traj.first if jax.tree.leaves(start_carry) else None
    return Batch(traj.obs, traj.action, traj.log_prob, traj.value, adv, ret, first, start_carry)


def minibatch_loss(
    ctx: TrainContext, hparams: Hyperparams, objective_state: Any, reduce: Collective, params, mb: Batch
):
    """The objective's loss of one minibatch under `params`, reading the objective's state:
    (loss, metrics). Advantages are normalised over the minibatch (on all devices under `reduce`)
    when configured."""
    dist, value = unroll(ctx.policy, params, mb.carry, mb.obs, mb.first)
    log_prob, entropy = ctx.dist.log_prob(dist, mb.action), ctx.dist.entropy(dist)
    adv = normalize_advantages(mb.advantages, reduce=reduce) if ctx.config.normalize_advantages else mb.advantages
    inputs = LossInputs(log_prob, mb.log_prob, entropy, value, mb.value, adv, mb.returns)
    return ctx.objective.loss(inputs, hparams, objective_state, ctx.config)


def _batch_dist(ctx: TrainContext, batch: Batch, params: Any):
    return unroll(ctx.policy, params, batch.carry, batch.obs, batch.first)[0]


def policy_kl(ctx: TrainContext, params: Any, batch: Batch, reduce: Collective = LOCAL) -> jax.Array:
    """d = k3 estimate of KL[π_old ‖ π_θ] over the whole batch under `params`: the PPO paper's
    (§4) measure for adapting β, taken after the update's epochs. (The approx_kl metric is
    measured before each minibatch step, so it never sees the last step.)"""
    log_prob = ctx.dist.log_prob(_batch_dist(ctx, batch, params), batch.action)
    return reduce.mean(approx_kl_k3(log_prob, batch.log_prob))


def _batch_log_prob(ctx: TrainContext, batch: Batch, dist) -> jax.Array:
    return ctx.dist.log_prob(dist, batch.action)


def batch_view(ctx: TrainContext, batch: Batch, reduce: Collective) -> BatchView:
    """The batch as a whole-batch policy step sees it (`core.objectives.BatchView`)."""
    adv = normalize_advantages(batch.advantages, reduce=reduce) if ctx.config.normalize_advantages else batch.advantages
    dist = functools.partial(_batch_dist, ctx, batch)
    return BatchView(dist, functools.partial(_batch_log_prob, ctx, batch), ctx.dist.kl, batch.log_prob, adv)


def policy_step(ctx: TrainContext, hparams: Hyperparams, params: Any, batch: Batch, reduce: Collective):
    """The objective's whole-batch policy step (e.g. TRPO's, `core.trpo`); returns (params,
    metrics policy_loss, approx_kl, entropy, clip_frac measured after the step)."""
    params, metrics = ctx.objective.policy_step(batch_view(ctx, batch, reduce), params, hparams, reduce.mean)
    dist = _batch_dist(ctx, batch, params)
    log_prob = ctx.dist.log_prob(dist, batch.action)
    metrics["entropy"] = reduce.mean(jnp.mean(ctx.dist.entropy(dist)))
    metrics["clip_frac"] = reduce.mean(clip_fraction(log_prob, batch.log_prob, hparams.clip_eps))
    return params, metrics


def _all_finite(tree) -> jax.Array:
    """True when no float leaf of `tree` holds NaN/Inf: one reduction over the float leaves
    raveled and joined (XLA compiles one kernel rather than one per leaf)."""
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.bool_(True)


def nonfinite_code(losses: dict, params: Any, traj) -> jax.Array:
    """Bitmask (see `NONFINITE_FLAGS`) of the quantities holding NaN/Inf in this update; 0 if none."""
    loss_terms = {k: v for k, v in losses.items() if k != "grad_norm"}
    flags = (
        (~_all_finite(loss_terms), 1),
        (~jnp.all(jnp.isfinite(losses["grad_norm"])), 2),
        (~_all_finite(params), 4),
        (~(_all_finite(traj.reward) & _all_finite(traj.obs)), 8),
    )
    return sum(jnp.where(bad, bit, 0) for bad, bit in flags).astype(jnp.float32)


def describe_nonfinite(code: int) -> str:
    """Names of the quantities in a `nonfinite` bitmask."""
    return ", ".join(name for bit, name in NONFINITE_FLAGS.items() if int(code) & bit)


def _any_device(code: jax.Array, reduce: Collective) -> jax.Array:
    """The bitmask with each bit set if it is set on any device."""
    if reduce.axis is None:
        return code
    bits = code.astype(jnp.int32)
    return sum(reduce.max(bits & b) for b in NONFINITE_FLAGS).astype(jnp.float32)


def update_metrics(ctx, hparams, state: TrainState, losses: dict, episodes, batch: Batch, nonfinite, reduce):
    """The per-update metrics (scalars): losses averaged over epochs and minibatches, episode
    statistics of the rollout, explained variance, learning rate, the objective's state metrics
    (e.g. kl_penalty's β) and the non-finite bitmask."""
    count, ret_sum, len_sum = (reduce.sum(x) for x in (episodes.count, episodes.return_sum, episodes.length_sum))
    has_ep = count > 0
    update = state.update + 1
    flat = lambda x: x.reshape(-1)  # noqa: E731
    metrics = {name: jnp.mean(value) for name, value in losses.items()}
    metrics.update(
        env_steps=update.astype(jnp.float32) * ctx.config.batch_size,
        episode_return=jnp.where(has_ep, ret_sum / jnp.maximum(count, 1), jnp.nan),
        episode_length=jnp.where(has_ep, len_sum / jnp.maximum(count, 1), jnp.nan),
        episodes=count,
        explained_variance=explained_variance(flat(batch.value), flat(batch.returns), reduce),
        lr=current_lr(ctx.config, hparams, state.update),
        nonfinite=_any_device(nonfinite, reduce),
    )
    if ctx.objective.state_metrics is not None:
        metrics.update(ctx.objective.state_metrics(state.objective_state))
    return metrics


def update_step(ctx: TrainContext, hparams: Hyperparams, state: TrainState, reduce: Collective = LOCAL):
    """One update: rollout, targets, the objective's policy step, epochs of minibatch steps and
    its after-update hook. Returns (state, metrics); `reduce` spans the devices holding the envs."""
    key, key_roll, key_epochs = jax.random.split(state.key, 3)
    env, traj, episodes = rollout(ctx.rollout, state.params, hparams, state.env, key_roll, reduce)
    batch = make_batch(ctx, hparams, state.params, traj, state.env.policy_carry)
    params, step_metrics = state.params, {}
    if ctx.objective.policy_step is not None:
        params, step_metrics = policy_step(ctx, hparams, params, batch, reduce)
    loss = functools.partial(minibatch_loss, ctx, hparams, state.objective_state, reduce)
    split = functools.partial(ctx.split, reduce)
    opt = ppo_optimizer(ctx.config, hparams)
    carry, losses = sgd_epochs(
        loss, opt, OptCarry(params, state.opt_state), batch, key_epochs, ctx.config.num_epochs, split, reduce
    )
    losses.update({k: jnp.broadcast_to(v, losses["value_loss"].shape) for k, v in step_metrics.items()})
    objective_state = state.objective_state
    if ctx.objective.after_update is not None:  # e.g. kl_penalty: adapt β to the KL the update ended at
        stats = UpdateStats(kl=policy_kl(ctx, carry.params, batch, reduce))
        objective_state = ctx.objective.after_update(objective_state, stats, hparams)
    nonfinite = nonfinite_code(losses, carry.params, traj)
    metrics = update_metrics(ctx, hparams, state, losses, episodes, batch, nonfinite, reduce)
    return TrainState(carry.params, carry.opt_state, env, key, state.update + 1, objective_state), metrics
