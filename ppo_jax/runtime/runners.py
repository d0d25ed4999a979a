"""How the run driver lays a run out on the devices: one implementation per layout, the same
methods each, so the driver's chunk loop, checkpoints and exports do not branch on it.

- `SeedRuns`: S seeds as one vmapped program, the seed axis sharded over the devices when it
  divides over them (CPU cores exposed as devices, or GPUs).
- `EnvShardedRun`: one run whose envs are split over the devices (`engine.sharded`).

Both keep the driver's view of the state batched over runs ([S, ...], S = 1 for the env-sharded
run), which is also the checkpoint layout, so `ppo-jax eval` and `--resume` read either.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import Hyperparams, PPOConfig
from ppo_jax.engine.sharded import (
    ENV_AXIS,
    make_env_sharding,
    place_env_sharded,
    run_env_sharded_chunk,
    state_shardings,
)
from ppo_jax.engine.train import TrainContext, TrainState, broadcast_hparams, init_state, run_chunk
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.distributed import (
    RUN_AXIS,
    check_divisible,
    gather,
    lowering_mesh,
    put_global,
    put_runs,
    run_mesh,
)


def init_runs(ctx: TrainContext, seeds: jax.Array, hparams: Hyperparams) -> TrainState:
    """`init_state` of every run from its seed [S] (keys made inside the program)."""
    return jax.vmap(functools.partial(init_state, ctx))(jax.vmap(jax.random.key)(seeds), hparams)


def _compile(ctx: TrainContext, fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=compiler_options(ctx.config.fast_paths))


COUNT = np.int32(0)  # the traced update count of a chunk program, as it is lowered


class SeedRuns:
    """S seeds of one config in one vmapped program (metrics [n, S])."""

    layout = "seeds"

    def __init__(self, ctx: TrainContext, seeds: list[int]):
        self.ctx, self.seeds = ctx, list(seeds)
        self.mesh = None
        if jax.device_count() > 1 and len(seeds) > 1:
            check_divisible(len(seeds), jax.device_count(), "seeds", "seeds")
            self.mesh = run_mesh()

    def place(self, tree: Any) -> Any:
        """Split the leading run axis over the devices (nothing to do on one device)."""
        return tree if self.mesh is None else put_runs(tree, self.mesh)

    def hparams(self, config: PPOConfig) -> Hyperparams:
        return self.place(broadcast_hparams(config.hyperparams(), len(self.seeds)))

    def init(self, hparams: Hyperparams) -> TrainState:
        seeds = self.place(np.asarray(self.seeds, np.uint32))
        # placed like a restored state: the program is compiled for these shardings and then fed its
        # own output, whose every leaf is split by seed
        return self.place(jax.jit(functools.partial(init_runs, self.ctx))(seeds, hparams))

    def abstract_state(self, hparams: Hyperparams) -> TrainState:
        """The shapes, dtypes and placement `init` will give, without running anything: the chunk
        program can compile from it while `init` compiles."""
        shapes = jax.eval_shape(functools.partial(init_runs, self.ctx), np.zeros(len(self.seeds), np.uint32), hparams)
        if self.mesh is None:
            return shapes
        sharding = NamedSharding(self.mesh, P(RUN_AXIS))
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)

    def program(self, state: TrainState, hparams: Hyperparams, length: int):
        """The compiled chunk: (state, hparams, count) -> (state, metrics [length, S]) running the
        first `count` <= `length` updates (`engine.train.run_chunk`)."""
        program = functools.partial(run_chunk, self.ctx, length=length, batched=True)
        with lowering_mesh(self.mesh):
            return _compile(self.ctx, program, state, hparams, COUNT)

    def saved(self, state: TrainState) -> TrainState:
        return state

    def saved_hparams(self, hparams: Hyperparams) -> Hyperparams:
        return hparams

    def restored(self, state: TrainState) -> TrainState:
        return self.place(state)

    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size


class EnvShardedRun:
    """One run (seed `config.seed`) with its envs over every device of every process (metrics
    [n, 1]). With several processes each steps the envs of its own devices; the state is placed
    from host data that every process holds in full, and gathered in full for checkpoints."""

    layout = "shard_envs"

    def __init__(self, ctx: TrainContext, seeds: list[int]):
        self.es = make_env_sharding(ctx, run_mesh(axis=ENV_AXIS))
        self.ctx, self.seeds = self.es.ctx, list(seeds)

    def hparams(self, config: PPOConfig) -> Hyperparams:
        return config.hyperparams()

    def abstract_state(self, hparams: Hyperparams) -> None:
        """None: the chunk program compiles from the placed state once `init` has run."""
        return None

    def place(self, state: TrainState) -> TrainState:
        """The env carry split over the mesh, everything else replicated."""
        if jax.process_count() == 1:
            return place_env_sharded(self.es, state)
        return put_global(state, state_shardings(self.es, state))

    def init(self, hparams: Hyperparams) -> TrainState:
        key = jax.random.key(self.seeds[0])
        return self.place(jax.jit(functools.partial(init_state, self.ctx))(key, hparams))

    def program(self, state: TrainState, hparams: Hyperparams, length: int):
        """As `SeedRuns.program`, metrics [length, 1]."""
        program = functools.partial(run_env_sharded_chunk, self.es, length=length)
        compiled = _compile(self.ctx, program, state, hparams, COUNT)
        return functools.partial(_with_run_axis, compiled)

    def saved(self, state: TrainState) -> TrainState:
        """The state with a run axis of 1, as checkpoints and exports hold it (with several
        processes: NumPy arrays, complete on every process, the key as raw key data)."""
        if jax.process_count() > 1:
            state = gather(state._replace(key=None if state.key is None else jax.random.key_data(state.key)))
        return jax.tree.map(lambda x: x[None], state)

    def saved_hparams(self, hparams: Hyperparams) -> Hyperparams:
        return broadcast_hparams(hparams, 1)

    def restored(self, state: TrainState) -> TrainState:
        return self.place(jax.tree.map(lambda x: x[0], state))

    def devices(self) -> int:
        return self.es.mesh.size


def _with_run_axis(compiled, state, hparams, count):
    state, metrics = compiled(state, hparams, count)  # metrics: replicated, complete on every process
    return state, jax.tree.map(lambda m: np.asarray(m)[:, None], metrics)


RUNNERS = {runner.layout: runner for runner in (SeedRuns, EnvShardedRun)}
