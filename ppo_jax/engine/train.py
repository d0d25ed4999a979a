"""The training program: `make_train(config) -> train(key, hparams)`, composed from a policy
family, an objective record and an environment.

The whole run is one jitted program: `lax.scan` over updates (`update.update_step`), each a
rollout scan, the objective's targets, and `num_epochs` × `num_minibatches` gradient steps.
Metrics are reduced per update inside the program; progress leaves through an optional host
callback. The run driver uses `run_chunk` instead: one program for chunks of any length, no
callback inside (JAX's persistent cache keeps it), progress reported by the host between chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ppo_jax.config import ConfigError, Hyperparams, PPOConfig
from ppo_jax.core.objectives import initial_state
from ppo_jax.engine.parts import resolve_parts
from ppo_jax.engine.rollout import RolloutContext, reset_envs
from ppo_jax.engine.sgd import Collective, sequence_split, shuffle_split, stratified_split
from ppo_jax.engine.update import (  # noqa: F401  (re-exported: the update's pieces)
    NONFINITE_FLAGS,
    Batch,
    TrainContext,
    TrainState,
    current_lr,
    describe_nonfinite,
    make_batch,
    minibatch_loss,
    nonfinite_code,
    policy_kl,
    ppo_optimizer,
    update_step,
)
from ppo_jax.envs import action_distribution
from ppo_jax.fast_paths import select
from ppo_jax.policies import is_recurrent

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
    "nonfinite",
)  # and the objective's state metrics (`Objective.state_metrics`, e.g. kl_penalty's kl_coef)


def init_state(ctx: TrainContext, key: jax.Array, hparams: Hyperparams) -> TrainState:
    """Initialise parameters, optimizer and environments from one key."""
    key, key_net, key_env = jax.random.split(key, 3)
    obs = jnp.zeros((1, *ctx.rollout.spec.obs_shape), jnp.float32)
    params = ctx.policy.init(key_net, obs, init_log_std=hparams.init_log_std)
    opt_state = ppo_optimizer(ctx.config, hparams).init(params)
    env = reset_envs(ctx.rollout, key_env)
    return TrainState(params, opt_state, env, key, jnp.int32(0), initial_state(ctx.objective, hparams))


# --- minibatch splits (`TrainContext.split`): (reduce, key, Batch [T, N]) -> [M, ...] ---------


def split_shuffled(
    num_minibatches: int, reduce: Collective, key: jax.Array, batch: Batch, permutation=jax.random.permutation
) -> Batch:
    """Feed-forward policies on one device: all T·N samples shuffled together."""
    return shuffle_split(num_minibatches, key, batch, permutation)


def split_stratified(num_minibatches: int, reduce: Collective, key: jax.Array, batch: Batch) -> Batch:
    """Feed-forward policies with envs over devices: every minibatch takes T/M steps of every env."""
    num_local = batch.obs.shape[1]
    env_ids = reduce.index() * num_local + jnp.arange(num_local)
    return stratified_split(num_minibatches, env_ids, key, batch)


def split_sequences(num_minibatches: int, reduce: Collective, key: jax.Array, batch: Batch) -> Batch:
    """Recurrent policies: minibatches of whole env sequences with their start carries."""
    steps, carry = sequence_split(num_minibatches, key, batch._replace(carry=None), batch.carry)
    return steps._replace(carry=carry)


def choose_split(config: PPOConfig, recurrent: bool, sharded: bool) -> Callable:
    """The minibatch split for a run; `ConfigError` when the sizes do not allow it."""
    if recurrent:
        if sharded:
            raise ConfigError("shard_envs", "--shard-envs does not support recurrent policies; use one device")
        if config.num_envs % config.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"a recurrent policy trains on whole env sequences: num_envs = {config.num_envs} must be "
                f"divisible by num_minibatches = {config.num_minibatches}",
            )
        return functools.partial(split_sequences, config.num_minibatches)
    if sharded:
        if config.num_steps % config.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"--shard-envs forms each minibatch from every env's steps: num_steps = {config.num_steps} must be "
                f"divisible by num_minibatches = {config.num_minibatches}",
            )
        return functools.partial(split_stratified, config.num_minibatches)
    return functools.partial(split_shuffled, config.num_minibatches, permutation=select(config.fast_paths).permutation)


class TrainResult(NamedTuple):
    """Output of `train`: the final state and per-update metrics (each [num_updates])."""

    state: TrainState
    metrics: dict[str, jax.Array]


def make_context(
    config: PPOConfig,
    env=None,
    env_params=None,
    callback=None,
    callback_every: int = 1,
    network: Any = None,
    sharded: bool = False,
    objective: Any = None,
) -> TrainContext:
    """Resolve the environment, policy family, objective and minibatch split; raises
    `ConfigError` before anything is compiled. `env`/`env_params`, `network` (a family object or
    `Family` record) and `objective` (an `Objective` record): a user's own parts given as
    objects instead of the names in `config` (`engine.parts`); `sharded`: the envs will be split
    over devices. `ctx.config` names the parts that ran (references where the objects have one)."""
    if int(callback_every) != callback_every or callback_every < 1:
        raise ConfigError("callback_every", f"must be a positive integer, got {callback_every!r}")
    parts = resolve_parts(config, env, env_params, network, objective)
    config, env, env_params, spec, policy = parts.config, parts.env, parts.env_params, parts.spec, parts.policy
    if spec.mask_size and config.normalize_obs:
        raise ConfigError(
            "normalize_obs",
            f"{config.env} appends a legal-action mask to its observations, which normalisation would change; "
            "set normalize_obs=False",
        )
    roll = RolloutContext(
        env=env,
        env_params=env_params,
        spec=spec,
        policy=policy,
        dist=action_distribution(spec, config.fast_paths),
        num_envs=config.num_envs,
        num_steps=config.num_steps,
        normalize_obs=config.normalize_obs,
        normalize_reward=config.normalize_reward,
    )
    split = choose_split(config, is_recurrent(policy), sharded)
    return TrainContext(config, roll, parts.objective, split, callback, int(callback_every), parts.unrecorded)


def run_updates(
    ctx: TrainContext,
    state: TrainState,
    hparams: Hyperparams,
    num_updates: int,
    batched: bool = False,
    step: Callable | None = None,
):
    """`num_updates` updates as one `lax.scan`: (state, metrics [num_updates, ...]).

    With `batched`, `state` and `hparams` carry a leading run axis [S] and each update is
    `jax.vmap`-ed over it (the same program as vmapping the whole scan); metrics are then
    [num_updates, S] and the callback sees one call per update with [S]-shaped values.
    `step(hparams, state) -> (state, metrics)` replaces `update_step` (e.g. its env-sharded form).
    """
    step = functools.partial(update_step, ctx) if step is None else step
    if batched:
        step = select(ctx.config.fast_paths).vmap_runs(step)

    def body(state, _):
        state, metrics = step(hparams, state)
        report_progress(ctx, state.update, metrics)
        return state, metrics

    return lax.scan(body, state, None, length=num_updates)


def run_chunk(
    ctx: TrainContext,
    state: TrainState,
    hparams: Hyperparams,
    count: jax.Array,
    length: int,
    batched: bool = False,
    step: Callable | None = None,
):
    """The first `count` of up to `length` updates: (state after `count` updates, metrics
    [length, ...] whose rows from `count` on are zero).

    `count` is traced (an int32 scalar, 0 <= count <= length), so one compiled program runs a
    chunk of any length up to `length`: the run driver picks chunk lengths on the host (to report
    progress between chunks and to end chunks on checkpoints) without compiling another program.
    The updates are the same `update_step`s as `run_updates`'s, in a `lax.fori_loop` (a while
    loop) instead of a scan; no host callback is made (a program without one can be loaded from
    JAX's persistent compilation cache). `batched` and `step` as in `run_updates`.
    """
    step = functools.partial(update_step, ctx) if step is None else step
    if batched:
        step = select(ctx.config.fast_paths).vmap_runs(step)
    shapes = jax.eval_shape(step, hparams, state)[1]
    rows = jax.tree.map(lambda s: jnp.zeros((length, *s.shape), s.dtype), shapes)

    def body(i, carry):
        state, rows = carry
        state, metrics = step(hparams, state)
        return state, jax.tree.map(lambda r, m: r.at[i].set(m), rows, metrics)

    return lax.fori_loop(0, count, body, (state, rows))


def report_progress(ctx: TrainContext, update: jax.Array, metrics: dict) -> None:
    """Hand `(update, metrics)` to `ctx.callback` on the host after every `ctx.callback_every`-th
    update and after the last one (nothing without a callback). A host callback stops the
    program for a round trip, so a progress display need not have one per update."""
    if ctx.callback is None:
        return
    if not jax.sharding.get_abstract_mesh().empty:  # runs split over devices: the host sees whole arrays
        update, metrics = lax.with_sharding_constraint((update, metrics), jax.sharding.PartitionSpec())
    if ctx.callback_every == 1:
        jax.debug.callback(ctx.callback, update, metrics)
        return
    count = jnp.max(update)  # batched runs share the update count
    due = (count % ctx.callback_every == 0) | (count >= ctx.config.num_updates)
    lax.cond(due, lambda: jax.debug.callback(ctx.callback, update, metrics), lambda: None)


def broadcast_hparams(hparams: Hyperparams, num_runs: int) -> Hyperparams:
    """Give every leaf a leading run axis [num_runs] (leaves that already have one are kept);
    NumPy leaves stay NumPy (no JAX computation outside a program)."""

    def broadcast(x):
        if jnp.ndim(x) != 0:
            return x
        return jnp.broadcast_to(x, (num_runs,)) if isinstance(x, jax.Array) else np.broadcast_to(x, (num_runs,))

    return jax.tree.map(broadcast, hparams)


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
    network: Any = None,
    objective: Any = None,
) -> Callable[..., TrainResult]:
    """Bind a config (its parts named in it, or given as objects: a gymnax-style env, a policy
    family, an objective record) into `train(key, hparams=None)`.

    `train` is pure and traceable: `jax.jit(jax.vmap(make_train(cfg)))(keys)` trains one run per
    key. `hparams` defaults to `config.hyperparams()`; pass a batched `Hyperparams` under vmap to
    sweep. `callback(update, metrics)` is called on the host after every `callback_every`-th
    update and the last one, when given.
    """
    return functools.partial(
        train, make_context(config, env, env_params, callback, callback_every, network, objective=objective)
    )


def make_train_batch(
    config: PPOConfig,
    env: Any = None,
    env_params: Any = None,
    callback: Callable[..., None] | None = None,
    callback_every: int = 1,
    network: Any = None,
    objective: Any = None,
) -> Callable[..., TrainResult]:
    """Like `make_train`, but `train(keys [S], hparams=None)` runs S runs in one program and calls
    `callback(update [S], metrics [S])` once per reported update (not once per run)."""
    return functools.partial(
        train_batch, make_context(config, env, env_params, callback, callback_every, network, objective=objective)
    )
