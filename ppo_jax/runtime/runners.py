"""How the run driver lays a run out on the devices: one implementation per layout, the same
methods each, so the driver's chunk loop, checkpoints and exports do not branch on it.

- `SeedRuns`: S seeds as one vmapped program, the seed axis sharded over the devices when it
  divides over them (CPU cores exposed as devices, or GPUs).
- `EnvShardedRun`: one run whose envs are split over the devices (`engine.sharded`).
- `SweepRuns`: R = C·S runs of a sweep, each with its own traced hyperparameters, K at a time
  through one compiled chunk program (the last batch padded), the run axis over the devices.

All keep the driver's view of the state batched over runs ([S, ...], S = 1 for the env-sharded
run), which is also the checkpoint layout, so `ppo-jax eval` and `--resume` read either.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax import lax
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


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def raw_keys(tree: Any) -> Any:
    """`tree` with every typed PRNG key leaf as its raw key data (a key [...] becomes uint32
    [..., 2] for threefry): the run's own key and any an environment keeps in its state (navix
    does). NumPy, and so the host between chunks and the checkpoints, holds no key types."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def typed_keys(tree: Any, like: Any) -> Any:
    """The inverse of `raw_keys`: each leaf of `tree` whose counterpart in `like` (the same
    structure, arrays or shapes) is a typed key, wrapped again with that key's implementation."""

    def wrap(x, t):
        return jax.random.wrap_key_data(x, impl=getattr(t.dtype, "_impl", None)) if _is_key(t) else x

    return jax.tree.map(wrap, tree, like)


def _saveable(shapes: TrainState) -> TrainState:
    """State shapes with every key as raw key data (the checkpoint layout), without a placement."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), jax.eval_shape(raw_keys, shapes))


class SeedRuns:
    """S seeds of one config in one vmapped program (metrics [n, S])."""

    layout = "seeds"

    def __init__(self, ctx: TrainContext, seeds: list[int], mesh=None):
        """`mesh`: the devices the seeds are split over (default: all, when there are several)."""
        self.ctx, self.seeds = ctx, list(seeds)
        if mesh is None and jax.device_count() > 1 and len(seeds) > 1:
            mesh = run_mesh()
        if mesh is not None:
            check_divisible(len(seeds), mesh.size, "seeds", "seeds")
        self.mesh = mesh if mesh is not None and mesh.size > 1 else None

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

    def saved_shapes(self, hparams: Hyperparams) -> TrainState:
        """The checkpoint's state shapes [S, ...] (the restore target)."""
        return _saveable(self.abstract_state(hparams))

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

    def saved_shapes(self, hparams: Hyperparams) -> TrainState:
        """The checkpoint's state shapes [1, ...] (the restore target)."""
        shapes = jax.eval_shape(lambda h: init_state(self.ctx, jax.random.key(self.seeds[0]), h), hparams)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape), x.dtype), _saveable(shapes))

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
        processes: NumPy arrays, complete on every process, every key as raw key data)."""
        if jax.process_count() > 1:
            state = gather(raw_keys(state))  # every key, the env's too, as raw key data
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


def _init_run(ctx: TrainContext, args: tuple[jax.Array, Hyperparams]) -> TrainState:
    key_data, hparams = args
    return init_state(ctx, jax.random.wrap_key_data(key_data), hparams)


def sweep_chunk(ctx: TrainContext, length: int, fresh, key_data, state, hparams, count):
    """A sweep's chunk program over K runs: `run_chunk` from `state` (every key as raw key data),
    or, when `fresh`, from the runs initialised from `key_data` [K, ...] inside the same program
    (one compiled program for the whole sweep). The initialisation is a `lax.map` over runs
    rather than a vmap (bit-identical parameters): a batched QR in the orthogonal initialiser can
    deadlock XLA's CPU thread pool on machines with few cores."""

    def init(key_data, hparams):
        return lax.map(functools.partial(_init_run, ctx), (key_data, hparams))

    typed = jax.eval_shape(init, key_data, hparams)
    state = lax.cond(fresh, lambda: init(key_data, hparams), lambda: typed_keys(state, typed))
    state, metrics = run_chunk(ctx, state, hparams, count, length=length, batched=True)
    return raw_keys(state), metrics


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` by repeating the last row (padded runs are computed and discarded)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)])


def program_bytes(compiled) -> int:
    """Argument + output + temporary bytes of a compiled program (0 where the backend does not say)."""
    try:
        mem = compiled.memory_analysis()
        return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return 0


class SweepRuns:
    """R runs (run r: key `seeds[r]`, hyperparameters `hparams[r]`) in batches of K through one
    compiled chunk program. Between chunks the state stays on the host (NumPy, the key as raw key
    data, complete on every process), which is also the checkpoint layout."""

    layout = "sweep"

    def __init__(self, ctx: TrainContext, seeds, hparams: Hyperparams, size: int, mesh=None, auto: bool = False):
        self.ctx, self.seeds, self.run_hparams = ctx, list(seeds), hparams
        self.size, self.mesh, self.auto = size, mesh, auto
        self.key_data = np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(np.asarray(self.seeds, np.uint32))))
        self.fresh = False  # the next chunk initialises the runs
        self.program_bytes = 0

    @property
    def num_batches(self) -> int:
        return -(-len(self.seeds) // self.size)

    def hparams(self, config: PPOConfig) -> Hyperparams:
        return self.run_hparams

    def abstract_state(self, hparams: Hyperparams) -> None:
        return None

    def saved_shapes(self, hparams: Hyperparams) -> TrainState:
        """The state's shapes [R, ...] as it stays between chunks and in checkpoints."""
        init = jax.vmap(functools.partial(init_state, self.ctx))
        return _saveable(jax.eval_shape(lambda kd, h: init(jax.random.wrap_key_data(kd), h), self.key_data, hparams))

    def init(self, hparams: Hyperparams) -> TrainState:
        """Zeros of the state's shapes: the first chunk initialises the runs inside the program."""
        self.fresh = True
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), self.saved_shapes(hparams))

    def _batch(self, b: int, size: int, *trees):
        start, stop = b * size, min((b + 1) * size, len(self.seeds))
        part = jax.tree.map(lambda x: _pad(np.asarray(x)[start:stop], size), trees)
        return part if self.mesh is None else put_runs(part, self.mesh)

    def _compile(self, state, hparams, length: int, size: int):
        example = self._batch(0, size, self.key_data, state, hparams)
        program = functools.partial(sweep_chunk, self.ctx, length)
        with lowering_mesh(self.mesh):
            return _compile(self.ctx, program, np.bool_(True), *example, COUNT)

    def program(self, state: TrainState, hparams: Hyperparams, length: int):
        """(state [R], hparams [R], count) -> (state, metrics [length, R]), every batch of K runs
        through one compiled program. K chosen from the device's memory is reduced once (and the
        program compiled again) when the compiled program needs more than half of it."""
        from ppo_jax.runtime.memory import device_memory_bytes

        compiled = self._compile(state, hparams, length, self.size)
        budget, devices = device_memory_bytes() // 2, 1 if self.mesh is None else self.mesh.size
        if self.auto and self.size > devices and program_bytes(compiled) > budget:
            self.size = -(-max(1, self.size * budget // program_bytes(compiled)) // devices) * devices
            compiled = self._compile(state, hparams, length, self.size)
        self.program_bytes = program_bytes(compiled)
        return functools.partial(self._run, compiled)

    def _run(self, compiled, state, hparams, count):
        fresh, self.fresh = np.bool_(self.fresh), False
        states, rows = [], []
        for b in range(self.num_batches):
            k = min(self.size, len(self.seeds) - b * self.size)
            new, metrics = gather(compiled(fresh, *self._batch(b, self.size, self.key_data, state, hparams), count))
            states.append(jax.tree.map(lambda x: x[:k], new))  # noqa: B023
            rows.append({n: v[:, :k] for n, v in metrics.items()})
        state = jax.tree.map(lambda *xs: np.concatenate(xs), *states)
        return state, {n: np.concatenate([m[n] for m in rows], axis=1) for n in rows[0]}

    def saved(self, state: TrainState) -> TrainState:
        return state

    def saved_hparams(self, hparams: Hyperparams) -> Hyperparams:
        return hparams

    def restored(self, state: TrainState) -> TrainState:
        return jax.tree.map(np.asarray, raw_keys(state))

    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size


RUNNERS = {runner.layout: runner for runner in (SeedRuns, EnvShardedRun, SweepRuns)}
