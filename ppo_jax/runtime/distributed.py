"""Scale-out: runs sharded across devices, one run's environments sharded across devices, and
JAX's multi-process runtime.

Three pieces, all with `jax.sharding` (no pmap):

- **Run sharding** (`run_mesh`, `put_runs`, `gather`): a batch of K runs (seeds × configurations)
  has a leading run axis; its inputs are placed with `NamedSharding(mesh, P("runs"))` and `jax.jit`
  partitions the vmapped program over the devices. Runs never communicate, so a run's result does
  not depend on how many devices computed it (up to float32 rounding, which depends on how many
  runs one device computes at once).
- **Env sharding** (`make_env_sharded_update`): one large run whose `num_envs` environments are split
  over the devices; see that function for the exact semantics.
- **Processes** (`resolve_processes`, `initialize`; in `ppo_jax.runtime.processes`, re-exported here):
  `--coordinator-address HOST:PORT --num-processes P --process-id I`, else JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID, else SLURM (jax's auto-detection inside an `srun` step of
  several tasks).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import ConfigError, Hyperparams
from ppo_jax.core.losses import scale_centred
from ppo_jax.core.policy_gradient import adapt_kl_coef
from ppo_jax.engine.rollout import reset_envs, rollout
from ppo_jax.engine.train import (
    NONFINITE_FLAGS,
    Batch,
    TrainContext,
    TrainState,
    current_lr,
    init_state,
    make_batch,
    make_optimizer,
    minibatch_loss,
    nonfinite_code,
    policy_kl,
    report_progress,
)
from ppo_jax.runtime.processes import Processes, initialize, resolve_processes  # noqa: F401  (re-exported)

RUN_AXIS = "runs"
ENV_AXIS = "envs"


def topology() -> dict[str, Any]:
    """What summary.json / sweep.json record about where the program ran."""
    return {
        "backend": jax.default_backend(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
    }


# ---------------------------------------------------------------------------------------------
# Run sharding


def run_mesh(devices: Any = None, axis: str = RUN_AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (axis,))


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_runs(tree: Any, mesh: Mesh, axis: str = RUN_AXIS) -> Any:
    """Place every leaf (the same host data on every process) with its leading axis sharded over
    `mesh`; typed PRNG keys are placed as key data and re-wrapped."""
    sharding = NamedSharding(mesh, P(axis))

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding))
        return _put(x, sharding)

    return jax.tree.map(put, tree)


def gather(tree: Any) -> Any:
    """NumPy copies of (possibly sharded, possibly multi-process) arrays, complete on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def check_divisible(count: int, devices: int, field: str, what: str) -> None:
    """`ConfigError` naming `field` unless `count` divides over `devices`."""
    if count % devices:
        raise ConfigError(
            field,
            f"{count} {what} do not divide over {devices} devices; use a multiple of {devices} "
            "(each device computes an equal share)",
        )


# ---------------------------------------------------------------------------------------------
# Env sharding: data-parallel PPO for one run
#
# Semantics (they do not depend on the device count D, so D = 1 is the reference for any D):
# - every environment i of the N is its own rollout with key fold_in(key_roll, i);
# - each epoch, every environment shuffles its own T steps with key fold_in(key_epoch, i), and
#   minibatch m takes the m-th T/M of them from every environment (stratified minibatches: each
#   sample is used once per epoch, each minibatch holds the same share of every environment);
# - a device computes the loss gradient of its environments' part of the minibatch and the
#   gradients are averaged over devices (`lax.pmean`), which is the gradient of the whole
#   minibatch's mean loss because every device holds the same number of samples;
# - advantages are normalised over the whole minibatch (moments averaged over devices);
#   metrics are averaged (losses) or summed (episodes) over devices.
# This is not the same random stream as a run without --shard-envs (which samples all N actions
# from one key and shuffles the N·T samples together); it needs num_steps % num_minibatches == 0
# and num_envs % D == 0, and does not support the running observation / reward normalisation
# (its statistics are shared over all environments).


class EnvSharding(NamedTuple):
    """Static pieces of an env-sharded run."""

    ctx: TrainContext  # the run's context (N environments), used for the optimizer and metrics
    env_ctx: TrainContext  # one environment, advantages normalised outside the loss
    mesh: Mesh  # 1-D over ENV_AXIS

    @property
    def num_envs(self) -> int:
        return self.ctx.config.num_envs


def make_env_sharding(ctx: TrainContext, mesh: Mesh | None = None) -> EnvSharding:
    """Check that `ctx`'s run can be env-sharded over `mesh` (default: all devices); `ConfigError` if not."""
    mesh = run_mesh(axis=ENV_AXIS) if mesh is None else mesh
    cfg = ctx.config
    if cfg.normalize_obs or cfg.normalize_reward:
        name = "normalize_obs" if cfg.normalize_obs else "normalize_reward"
        raise ConfigError(
            name,
            "--shard-envs does not support running normalisation statistics (shared over envs); "
            "train with --no-normalize-obs --no-normalize-reward (the shipped configs of some envs turn them on)",
        )
    if cfg.num_steps % cfg.num_minibatches:
        raise ConfigError(
            "num_minibatches",
            f"--shard-envs forms each minibatch from every env's steps: num_steps = {cfg.num_steps} must be "
            f"divisible by num_minibatches = {cfg.num_minibatches}",
        )
    check_divisible(cfg.num_envs, mesh.size, "num_envs", "environments")
    one = cfg.replace(num_envs=1, normalize_advantages=False)
    env_ctx = ctx._replace(config=one, rollout=ctx.rollout._replace(num_envs=1), callback=None)
    return EnvSharding(ctx, env_ctx, mesh)


def init_env_sharded(es: EnvSharding, key: jax.Array, hparams: Hyperparams) -> TrainState:
    """Like `train.init_state`, but the env carry holds N one-env carries [N, 1, ...]."""
    state = init_state(es.ctx, key, hparams)
    _, _, key_env = jax.random.split(key, 3)
    env = jax.vmap(functools.partial(reset_envs, es.env_ctx.rollout))(jax.random.split(key_env, es.num_envs))
    return state._replace(env=env)


def _state_specs(state: TrainState) -> TrainState:
    specs = jax.tree.map(lambda _: P(), state)
    return specs._replace(env=jax.tree.map(lambda _: P(ENV_AXIS), state.env))


def place_env_sharded(es: EnvSharding, state: TrainState) -> TrainState:
    """Shard the env carry over the mesh and replicate everything else."""
    specs = _state_specs(state)
    return jax.device_put(state, jax.tree.map(lambda s: NamedSharding(es.mesh, s), specs))


def _normalize_global(adv: jax.Array, eps: float = 1e-8) -> jax.Array:
    """`losses.normalize_advantages` over the whole minibatch (all devices' parts, equal sizes)."""
    mean = lax.pmean(jnp.mean(adv), ENV_AXIS)
    centred = adv - mean
    if adv.size * lax.psum(1, ENV_AXIS) < 2:
        return centred
    std = jnp.sqrt(lax.pmean(jnp.mean(centred**2), ENV_AXIS))
    return scale_centred(centred, std, lax.pmax(jnp.max(jnp.abs(adv)), ENV_AXIS), eps)


def _minibatch_step(es: EnvSharding, hparams: Hyperparams, kl_coef: jax.Array, carry, mb: Batch):
    params, opt_state = carry
    if es.ctx.config.normalize_advantages:
        mb = mb._replace(advantages=_normalize_global(mb.advantages))
    loss = functools.partial(minibatch_loss, es.env_ctx, hparams, kl_coef)
    grads, metrics = jax.grad(loss, has_aux=True)(params, mb)
    grads, metrics = lax.pmean((grads, metrics), ENV_AXIS)
    updates, opt_state = make_optimizer(es.ctx.config, hparams).update(grads, opt_state, params)
    metrics["grad_norm"] = optax.global_norm(grads)
    return (optax.apply_updates(params, updates), opt_state), metrics


def _epoch(es: EnvSharding, hparams, kl_coef, batch: Batch, env_ids: jax.Array, carry, key: jax.Array):
    """Stratified minibatches: each env shuffles its T steps; minibatch m takes T/M of each env's."""
    cfg = es.ctx.config
    steps, m = cfg.num_steps, cfg.num_minibatches
    perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), steps))(env_ids)

    def split(x):  # [n, T, ...] -> [M, n·T/M, ...]
        x = jax.vmap(lambda xi, p: jnp.take(xi, p, axis=0))(x, perms)
        x = x.reshape(x.shape[0], m, steps // m, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0).reshape(m, -1, *x.shape[3:])

    return lax.scan(functools.partial(_minibatch_step, es, hparams, kl_coef), carry, jax.tree.map(split, batch))


def _global_explained_variance(values: jax.Array, returns: jax.Array) -> jax.Array:
    def var(x):
        mean = lax.pmean(jnp.mean(x), ENV_AXIS)
        return lax.pmean(jnp.mean((x - mean) ** 2), ENV_AXIS)

    var_r = var(returns)
    return jnp.where(var_r > 0, 1.0 - var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), 0.0)


def _any_bits(code: jax.Array) -> jax.Array:
    bits = code.astype(jnp.int32)
    return sum(lax.pmax(bits & b, ENV_AXIS) for b in NONFINITE_FLAGS).astype(jnp.float32)


def env_sharded_update(es: EnvSharding, hparams: Hyperparams, state: TrainState, env_ids: jax.Array):
    """One PPO update as seen by one device (inside `shard_map`): its envs' rollouts and GAE, then
    epochs of minibatch steps with gradients averaged over devices. Returns (state, metrics)."""
    cfg = es.ctx.config
    key, key_roll, key_epochs = jax.random.split(state.key, 3)

    def collect(carry, i):
        return rollout(es.env_ctx.rollout, state.params, hparams, carry, jax.random.fold_in(key_roll, i))

    env, traj, episodes = jax.vmap(collect)(state.env, env_ids)  # traj [n, T, 1, ...]
    batch = jax.vmap(functools.partial(make_batch, es.env_ctx, hparams, state.params))(traj)  # [n, T, ...]
    epoch = functools.partial(_epoch, es, hparams, state.kl_coef, batch, env_ids)
    (params, opt_state), losses = lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(key_epochs, cfg.num_epochs)
    )
    update = state.update + 1
    kl_coef = state.kl_coef
    if cfg.objective == "kl_penalty":
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
        kl = lax.pmean(policy_kl(es.env_ctx, hparams, params, flat), ENV_AXIS)
        kl_coef = adapt_kl_coef(kl_coef, kl, hparams.kl_target)
    count, ret_sum, len_sum = (lax.psum(jnp.sum(x), ENV_AXIS) for x in (episodes.count, *episodes[:2]))
    has_ep = count > 0
    metrics = {name: jnp.mean(value) for name, value in losses.items()}
    metrics.update(
        env_steps=update.astype(jnp.float32) * cfg.batch_size,
        episode_return=jnp.where(has_ep, ret_sum / jnp.maximum(count, 1), jnp.nan),
        episode_length=jnp.where(has_ep, len_sum / jnp.maximum(count, 1), jnp.nan),
        episodes=count,
        explained_variance=_global_explained_variance(batch.value, batch.returns),
        lr=current_lr(cfg, hparams, state.update),
        kl_coef=state.kl_coef,
        nonfinite=_any_bits(nonfinite_code(losses, params, traj)),
    )
    return TrainState(params, opt_state, env, key, update, kl_coef), metrics


def run_env_sharded(es: EnvSharding, state: TrainState, hparams: Hyperparams, num_updates: int):
    """`num_updates` env-sharded updates as one `lax.scan` (jit it): (state, metrics [num_updates])."""
    specs = _state_specs(state)
    step = jax.shard_map(
        functools.partial(env_sharded_update, es),
        mesh=es.mesh,
        in_specs=(P(), specs, P(ENV_AXIS)),
        out_specs=(specs, P()),
        check_vma=False,  # rollout's scan starts from unvarying zeros; replication comes from pmean/psum
    )
    env_ids = jnp.arange(es.num_envs)

    def body(state, _):
        state, metrics = step(hparams, state, env_ids)
        report_progress(es.ctx, state.update, metrics)
        return state, metrics

    return lax.scan(body, state, None, length=num_updates)
