"""Training: named runner state, one PPO update, and `make_train(config) -> train(key, hparams)`.

The whole run is one jitted program: `lax.scan` over updates, each update a rollout scan,
GAE, and `num_epochs` × `num_minibatches` gradient steps. Metrics are reduced per update inside
the program; progress leaves through an optional host callback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ppo_jax.config import ConfigError, Hyperparams, PPOConfig
from ppo_jax.core.losses import (
    LossInputs,
    approx_kl_k3,
    clip_fraction,
    explained_variance,
    gae,
    normalize_advantages,
    ppo_loss,
)
from ppo_jax.core.policy_gradient import a2c_loss, adapt_kl_coef, discounted_returns, kl_penalty_loss, reinforce_loss
from ppo_jax.engine.rollout import EnvCarry, RolloutContext, reset_envs, rollout
from ppo_jax.envs import env_spec, make_env
from ppo_jax.policies.mlp import ActorCritic, init_actor_critic, log_prob_and_entropy

METRIC_NAMES = (
    "env_steps",
    "episode_return",
    "episode_length",
    "episodes",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_frac",
    "explained_variance",
    "grad_norm",
    "lr",
    "kl_coef",
    "nonfinite",
)

# Bits of the "nonfinite" metric: which quantity held a NaN or Inf in an update.
NONFINITE_FLAGS = {1: "loss", 2: "gradients", 4: "parameters", 8: "environment outputs (reward or observation)"}


class TrainState(NamedTuple):
    """The complete state of a run between updates (what a checkpoint must hold)."""

    params: Any  # Flax parameters of the ActorCritic
    opt_state: Any  # optax state (includes the schedule's step count)
    env: EnvCarry  # env states, last observations, episode counters, normalisation statistics
    key: jax.Array  # RNG key for the next update
    update: jax.Array  # number of updates done, int32
    kl_coef: jax.Array  # adaptive KL-penalty coefficient beta (kl_penalty objective; else constant)


class Batch(NamedTuple):
    """A flattened rollout for the update: every field [B, ...] with B = num_envs * num_steps."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantages: jax.Array
    returns: jax.Array


class TrainContext(NamedTuple):
    """Static pieces of a run, bound once by `make_train`."""

    config: PPOConfig
    rollout: RolloutContext
    callback: Callable[..., None] | None
    callback_every: int = 1  # call `callback` after every k-th update (and the last)


def make_network(config: PPOConfig, spec) -> ActorCritic:
    """The ActorCritic for `config` and an `EnvSpec`."""
    return ActorCritic(
        action_dim=spec.action_dim,
        discrete=spec.discrete,
        obs_ndim=len(spec.obs_shape),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
    )


def make_optimizer(config: PPOConfig, hparams: Hyperparams) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps `adam_eps`) with optional linear decay to 0 over all minibatch steps."""
    lr: Any = hparams.lr
    if config.anneal_lr:
        steps = config.num_updates * config.num_epochs * config.num_minibatches
        lr = optax.linear_schedule(hparams.lr, 0.0, steps)
    return optax.chain(optax.clip_by_global_norm(hparams.max_grad_norm), optax.adam(lr, eps=hparams.adam_eps))


def current_lr(config: PPOConfig, hparams: Hyperparams, update: jax.Array) -> jax.Array:
    """Learning rate at the first minibatch step of update number `update`."""
    if not config.anneal_lr:
        return hparams.lr
    steps = config.num_updates * config.num_epochs * config.num_minibatches
    count = update * config.num_epochs * config.num_minibatches
    return hparams.lr * (1.0 - count / steps)


def init_state(ctx: TrainContext, key: jax.Array, hparams: Hyperparams) -> TrainState:
    """Initialise parameters, optimizer and environments from one key."""
    key, key_net, key_env = jax.random.split(key, 3)
    spec = ctx.rollout.spec
    obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
    params = init_actor_critic(ctx.rollout.network, key_net, obs, hparams.init_log_std)
    opt_state = make_optimizer(ctx.config, hparams).init(params)
    env = reset_envs(ctx.rollout, key_env)
    return TrainState(params, opt_state, env, key, jnp.int32(0), jnp.asarray(hparams.kl_coef, jnp.float32))


def minibatch_loss(ctx: TrainContext, hparams: Hyperparams, kl_coef: jax.Array, params: Any, mb: Batch):
    """Loss of one minibatch under `params` for the configured objective: (loss, metrics)."""
    cfg = ctx.config
    out = ctx.rollout.network.apply(params, mb.obs, hparams.init_log_std)
    log_prob, entropy = log_prob_and_entropy(out.dist, mb.action, ctx.rollout.spec.discrete)
    adv = normalize_advantages(mb.advantages) if cfg.normalize_advantages else mb.advantages
    inputs = LossInputs(log_prob, mb.log_prob, entropy, out.value, mb.value, adv, mb.returns)
    if cfg.objective == "clip":
        loss, metrics = ppo_loss(inputs, hparams.clip_eps, hparams.vf_coef, hparams.ent_coef, cfg.clip_value_loss)
    elif cfg.objective == "kl_penalty":
        loss, metrics = kl_penalty_loss(inputs, kl_coef, hparams.vf_coef, hparams.ent_coef)
    elif cfg.objective == "a2c":
        loss, metrics = a2c_loss(inputs, hparams.vf_coef, hparams.ent_coef)
    else:
        loss, metrics = reinforce_loss(inputs, hparams.vf_coef, hparams.ent_coef, cfg.reinforce_baseline)
    metrics = {k: metrics[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl")}
    metrics["clip_frac"] = clip_fraction(lax.stop_gradient(log_prob), mb.log_prob, hparams.clip_eps)
    return loss, metrics


def minibatch_step(ctx: TrainContext, hparams: Hyperparams, kl_coef: jax.Array, carry, mb: Batch):
    """One gradient step on one minibatch. Carry: (params, opt_state)."""
    params, opt_state = carry
    grads, metrics = jax.grad(functools.partial(minibatch_loss, ctx, hparams, kl_coef), has_aux=True)(params, mb)
    updates, opt_state = make_optimizer(ctx.config, hparams).update(grads, opt_state, params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return (optax.apply_updates(params, updates), opt_state), metrics


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of 0..n−1 [n] int32, by sorting packed 32-bit keys.

    Each round sorts k = (random bits with the low b = ⌈log2 n⌉ bits cleared) | position, one
    uint32 operand, then maps the positions through the order so far. A tie in the random bits
    keeps the previous order, so rounds are repeated until n³ ≤ 2^(rounds·(32 − b)), the
    confidence `jax.random.permutation` asks of its own rounds: uniform up to such ties, like
    it, and several times faster on CPU (XLA sorts one integer operand without calling a
    comparator per pair). A different random stream from `jax.random.permutation`.
    """
    bits = max(1, (n - 1).bit_length())
    if bits > 24:  # fewer than 8 random bits per round: use JAX's sort of key-value pairs
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = -(-3 * bits // (32 - bits))
    index = jnp.arange(n, dtype=jnp.uint32)
    low = jnp.uint32((1 << bits) - 1)
    order = jnp.arange(n, dtype=jnp.int32)
    for round_key in jax.random.split(key, rounds):
        noise = jax.random.bits(round_key, (n,), jnp.uint32)
        position = lax.sort((noise & ~low) | index) & low
        order = order[position.astype(jnp.int32)]
    return order


def epoch_step(ctx: TrainContext, hparams: Hyperparams, kl_coef: jax.Array, batch: Batch, carry, key: jax.Array):
    """One pass over the batch in shuffled minibatches, each sample used once."""
    cfg = ctx.config
    perm = permutation(key, cfg.batch_size)
    shuffled = jax.tree.map(
        lambda x: jnp.take(x, perm, axis=0).reshape(cfg.num_minibatches, cfg.minibatch_size, *x.shape[1:]), batch
    )
    return lax.scan(functools.partial(minibatch_step, ctx, hparams, kl_coef), carry, shuffled)


def make_batch(ctx: TrainContext, hparams: Hyperparams, params: Any, traj) -> Batch:
    """GAE over the rollout, with V(s'_t) from one batched critic pass over the final observations."""
    next_values = ctx.rollout.network.apply(params, traj.final_obs, method=ActorCritic.value)
    adv, ret = gae(
        traj.reward, traj.value, next_values, traj.terminated, traj.truncated, hparams.gamma, hparams.gae_lambda
    )
    if ctx.config.objective == "reinforce":  # Monte-Carlo return within the rollout, no bootstrap
        ret = discounted_returns(traj.reward, traj.terminated, traj.truncated, hparams.gamma)
    flat = lambda x: x.reshape(ctx.config.batch_size, *x.shape[2:])  # noqa: E731
    return Batch(*map(flat, (traj.obs, traj.action, traj.log_prob, traj.value, adv, ret)))


def policy_kl(ctx: TrainContext, hparams: Hyperparams, params: Any, batch: Batch) -> jax.Array:
    """d = k3 estimate of KL[π_old ‖ π_θ] over the whole batch [B] under `params`: the PPO
    paper's (§4) measure for adapting β, taken after the update's epochs. (The approx_kl metric
    is measured before each minibatch step, so it never sees the last step, and with one
    minibatch per update it is always 0.)"""
    out = ctx.rollout.network.apply(params, batch.obs, hparams.init_log_std)
    log_prob, _ = log_prob_and_entropy(out.dist, batch.action, ctx.rollout.spec.discrete)
    return approx_kl_k3(log_prob, batch.log_prob)


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


def update_step(ctx: TrainContext, hparams: Hyperparams, state: TrainState, _=None):
    """One PPO update: rollout, GAE, epochs of minibatch steps. Returns (state, metrics)."""
    cfg = ctx.config
    key, key_roll, key_epochs = jax.random.split(state.key, 3)
    env, traj, episodes = rollout(ctx.rollout, state.params, hparams, state.env, key_roll)
    batch = make_batch(ctx, hparams, state.params, traj)
    epoch = functools.partial(epoch_step, ctx, hparams, state.kl_coef, batch)
    (params, opt_state), losses = lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(key_epochs, cfg.num_epochs)
    )
    update = state.update + 1
    kl_coef = state.kl_coef
    if cfg.objective == "kl_penalty":  # PPO paper §4: adapt beta to the KL the update ended at
        kl_coef = adapt_kl_coef(kl_coef, policy_kl(ctx, hparams, params, batch), hparams.kl_target)
    nonfinite = nonfinite_code(losses, params, traj)
    has_ep = episodes.count > 0
    metrics = {name: jnp.mean(value) for name, value in losses.items()}
    metrics.update(
        env_steps=update.astype(jnp.float32) * cfg.batch_size,
        episode_return=jnp.where(has_ep, episodes.return_sum / jnp.maximum(episodes.count, 1), jnp.nan),
        episode_length=jnp.where(has_ep, episodes.length_sum / jnp.maximum(episodes.count, 1), jnp.nan),
        episodes=episodes.count,
        explained_variance=explained_variance(batch.value, batch.returns),
        lr=current_lr(cfg, hparams, state.update),
        kl_coef=state.kl_coef,
        nonfinite=nonfinite,
    )
    return TrainState(params, opt_state, env, key, update, kl_coef), metrics


class TrainResult(NamedTuple):
    """Output of `train`: the final state and per-update metrics (each [num_updates])."""

    state: TrainState
    metrics: dict[str, jax.Array]


def make_context(config: PPOConfig, env=None, env_params=None, callback=None, callback_every: int = 1) -> TrainContext:
    """Resolve the environment and network; raises `ConfigError` before anything is compiled."""
    if int(callback_every) != callback_every or callback_every < 1:
        raise ConfigError("callback_every", f"must be a positive integer, got {callback_every!r}")
    if env is None:
        env, default_params = make_env(config.env)
        env_params = default_params if env_params is None else env_params
    elif env_params is None:
        env_params = env.default_params
    spec = env_spec(env, env_params)
    roll = RolloutContext(
        env=env,
        env_params=env_params,
        spec=spec,
        network=make_network(config, spec),
        num_envs=config.num_envs,
        num_steps=config.num_steps,
        normalize_obs=config.normalize_obs,
        normalize_reward=config.normalize_reward,
    )
    return TrainContext(config, roll, callback, int(callback_every))


def run_updates(ctx: TrainContext, state: TrainState, hparams: Hyperparams, num_updates: int, batched: bool = False):
    """`num_updates` updates as one `lax.scan`: (state, metrics [num_updates, ...]).

    With `batched`, `state` and `hparams` carry a leading run axis [S] and each update is
    `jax.vmap`-ed over it (the same program as vmapping the whole scan); metrics are then
    [num_updates, S] and the callback sees one call per update with [S]-shaped values.
    """
    step = functools.partial(update_step, ctx)
    if batched and state.update.shape == (1,):
        step = _one_run(step)
    elif batched:
        step = jax.vmap(step)

    def body(state, _):
        state, metrics = step(hparams, state)
        report_progress(ctx, state.update, metrics)
        return state, metrics

    return lax.scan(body, state, None, length=num_updates)


def _one_run(step):
    """`jax.vmap(step)` for a run axis of size 1, traced without the axis: XLA's CPU programs for
    size-1 batched products and reductions were ~25 % slower than the same unbatched ones."""

    def one(hparams, state):
        squeeze = functools.partial(jax.tree.map, lambda x: x[0])
        state, metrics = step(squeeze(hparams), squeeze(state))
        return jax.tree.map(lambda x: x[None], (state, metrics))

    return one


def report_progress(ctx: TrainContext, update: jax.Array, metrics: dict) -> None:
    """Hand `(update, metrics)` to `ctx.callback` on the host after every `ctx.callback_every`-th
    update and after the last one (nothing without a callback). A host callback stops the
    program for a round trip, so a progress display need not have one per update."""
    if ctx.callback is None:
        return
    if ctx.callback_every == 1:
        jax.debug.callback(ctx.callback, update, metrics)
        return
    count = jnp.max(update)  # batched runs share the update count
    due = (count % ctx.callback_every == 0) | (count >= ctx.config.num_updates)
    lax.cond(due, lambda: jax.debug.callback(ctx.callback, update, metrics), lambda: None)


def broadcast_hparams(hparams: Hyperparams, num_runs: int) -> Hyperparams:
    """Give every leaf a leading run axis [num_runs] (leaves that already have one are kept)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_runs,)) if jnp.ndim(x) == 0 else x, hparams)


def train(ctx: TrainContext, key: jax.Array, hparams: Hyperparams | None = None) -> TrainResult:
    """A whole run from `key`: init, then `config.num_updates` updates."""
    hparams = ctx.config.hyperparams() if hparams is None else hparams
    state = init_state(ctx, key, hparams)
    state, metrics = run_updates(ctx, state, hparams, ctx.config.num_updates)
    return TrainResult(state, metrics)


def train_batch(ctx: TrainContext, keys: jax.Array, hparams: Hyperparams | None = None) -> TrainResult:
    """Runs for `keys` [S] (and per-run `hparams` [S], or shared ones) as one program.

    Equal to `jax.vmap(train)` run by run; metrics come out [num_updates, S].
    """
    num_runs = keys.shape[0]
    hparams = broadcast_hparams(ctx.config.hyperparams() if hparams is None else hparams, num_runs)
    state = jax.vmap(functools.partial(init_state, ctx))(keys, hparams)
    state, metrics = run_updates(ctx, state, hparams, ctx.config.num_updates, batched=True)
    return TrainResult(state, metrics)


def make_train(
    config: PPOConfig,
    env: Any = None,
    env_params: Any = None,
    callback: Callable[..., None] | None = None,
    callback_every: int = 1,
) -> Callable[..., TrainResult]:
    """Bind a config (and optionally a custom gymnax-style env) into `train(key, hparams=None)`.

    `train` is pure and traceable: `jax.jit(jax.vmap(make_train(cfg)))(keys)` trains one run per
    key. `hparams` defaults to `config.hyperparams()`; pass a batched `Hyperparams` under vmap to
    sweep. `callback(update, metrics)` is called on the host after every `callback_every`-th
    update and the last one, when given.
    """
    return functools.partial(train, make_context(config, env, env_params, callback, callback_every))


def make_train_batch(
    config: PPOConfig,
    env: Any = None,
    env_params: Any = None,
    callback: Callable[..., None] | None = None,
    callback_every: int = 1,
) -> Callable[..., TrainResult]:
    """Like `make_train`, but `train(keys [S], hparams=None)` runs S runs in one program and calls
    `callback(update [S], metrics [S])` once per reported update (not once per run)."""
    return functools.partial(train_batch, make_context(config, env, env_params, callback, callback_every))
