"""One run whose environments are split over devices (`ppo-jax train --shard-envs`):
data-parallel PPO with `shard_map`, the same `update.update_step` as on one device with the
cross-device reduction `Collective(ENV_AXIS)`.

Semantics (they do not depend on the device count D, so D = 1 is the reference for any D):
- the rollout's random draws are made for all N envs and each device takes its envs' columns;
- each epoch, every env shuffles its own T steps with key fold_in(key_epoch, env id), and
  minibatch m takes the m-th T/M of them from every env (`sgd.stratified_split`);
- a device computes the loss gradient of its envs' part of the minibatch and the gradients are
  averaged over devices (`lax.pmean`), which is the gradient of the whole minibatch's mean loss
  because every device holds the same number of samples;
- advantages are normalised over the whole minibatch (moments averaged over devices); metrics are
  averaged (losses) or summed (episodes) over devices.
This is not the same run as one without --shard-envs (whose minibatches shuffle all N·T samples
together); it needs num_steps % num_minibatches == 0 and num_envs % D == 0, a feed-forward policy,
and no running observation / reward normalisation (its statistics are shared over all envs).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import ConfigError, Hyperparams
from ppo_jax.engine.rollout import EnvCarry
from ppo_jax.engine.sgd import Collective
from ppo_jax.engine.train import TrainContext, TrainState, choose_split, run_chunk, run_updates, update_step
from ppo_jax.policies import is_recurrent

ENV_AXIS = "envs"


class EnvSharding(NamedTuple):
    """Static pieces of an env-sharded run: its context and the 1-D mesh over ENV_AXIS."""

    ctx: TrainContext
    mesh: Mesh

    @property
    def num_envs(self) -> int:
        return self.ctx.config.num_envs


def make_env_sharding(ctx: TrainContext, mesh: Mesh | None = None) -> EnvSharding:
    """Check that `ctx`'s run can be env-sharded over `mesh` (default: every device); raises
    `ConfigError` naming the field if not."""
    mesh = Mesh(np.asarray(jax.devices()), (ENV_AXIS,)) if mesh is None else mesh
    cfg = ctx.config
    if cfg.normalize_obs or cfg.normalize_reward:
        name = "normalize_obs" if cfg.normalize_obs else "normalize_reward"
        raise ConfigError(
            name,
            "--shard-envs does not support running normalisation statistics (shared over envs); "
            "train with --no-normalize-obs --no-normalize-reward (the shipped configs of some envs turn them on)",
        )
    if cfg.num_envs % mesh.size:
        processes = len({d.process_index for d in mesh.devices.flat})
        where = f"{mesh.size} devices" + (f" of {processes} processes" if processes > 1 else "")
        raise ConfigError(
            "num_envs",
            f"{cfg.num_envs} environments do not divide over {where}; use a multiple of {mesh.size} "
            "(each device computes an equal share)",
        )
    split = choose_split(cfg, is_recurrent(ctx.policy), sharded=True)
    return EnvSharding(ctx._replace(split=split), mesh)


def state_specs(state: TrainState) -> TrainState:
    """PartitionSpecs of a TrainState: every per-env leaf of the env carry split over ENV_AXIS,
    everything else (parameters, optimizer, shared statistics, key, counters) replicated."""
    env: EnvCarry = state.env
    per_env = lambda tree: jax.tree.map(lambda _: P(ENV_AXIS), tree)  # noqa: E731
    shared = lambda tree: jax.tree.map(lambda _: P(), tree)  # noqa: E731
    env_specs = EnvCarry(
        env_state=per_env(env.env_state),
        obs=P(ENV_AXIS),
        episode_return=P(ENV_AXIS),
        episode_length=P(ENV_AXIS),
        obs_stats=shared(env.obs_stats),
        reward_scaler=env.reward_scaler._replace(ret=P(ENV_AXIS), stats=shared(env.reward_scaler.stats)),
        policy_carry=per_env(env.policy_carry),
        first=P(ENV_AXIS),
    )
    return shared(state)._replace(env=env_specs)


def state_shardings(es: EnvSharding, state: TrainState) -> TrainState:
    """The `NamedSharding` of every leaf of `state` on the mesh (see `state_specs`)."""
    return jax.tree.map(lambda s: NamedSharding(es.mesh, s), state_specs(state))


def place_env_sharded(es: EnvSharding, state: TrainState) -> TrainState:
    """Split the env carry over the mesh and replicate everything else (one process; with several,
    `runtime.distributed.put_global` places host data on the mesh)."""
    return jax.device_put(state, state_shardings(es, state))


def sharded_step(es: EnvSharding, state: TrainState):
    """`update_step` under `shard_map`: (hparams, state) -> (state, metrics), each device
    updating its share of the envs with gradients averaged over ENV_AXIS."""
    specs = state_specs(state)
    return jax.shard_map(
        functools.partial(_device_update, es.ctx),
        mesh=es.mesh,
        in_specs=(P(), specs),
        out_specs=(specs, P()),
        check_vma=False,  # the rollout's scan starts from unvarying zeros; replication comes from pmean/psum
    )


def _device_update(ctx: TrainContext, hparams: Hyperparams, state: TrainState):
    return update_step(ctx, hparams, state, Collective(ENV_AXIS))


def run_env_sharded(es: EnvSharding, state: TrainState, hparams: Hyperparams, num_updates: int):
    """`num_updates` env-sharded updates as one `lax.scan` (jit it): (state, metrics [num_updates])."""
    return run_updates(es.ctx, state, hparams, num_updates, step=sharded_step(es, state))


def run_env_sharded_chunk(es: EnvSharding, state: TrainState, hparams: Hyperparams, count: jax.Array, length: int):
    """The first `count` of up to `length` env-sharded updates (`train.run_chunk`; jit it):
    (state, metrics [length], zero from row `count` on)."""
    return run_chunk(es.ctx, state, hparams, count, length, step=sharded_step(es, state))
