"""Sweeps: seeds × hyperparameter configurations trained as one compiled program.

A sweep is C configurations (values of traced `Hyperparams` fields, `sweep_space`) × S seeds =
R runs. Run r = c·S + s trains configuration c from key `jax.random.key(seeds[s])`, the run that
`ppo-jax train --seed seeds[s]` with those values trains (equal up to float32 rounding, which
depends on the batch size). All R runs go through one program, `jax.vmap`-ed over a
`Hyperparams` pytree with leaves [K] and K keys; when R runs do not fit in memory they are run
K at a time through that same compiled program (the last batch padded), so the number of
compiles does not grow with the number of batches. Every mistake raises `ConfigError` before
compiling.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import (
    ConfigError,
    Hyperparams,
    PPOConfig,
    resolve_seeds,
)
from ppo_jax.engine.train import TrainContext, TrainState, init_state, make_context, run_updates
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.distributed import RUN_AXIS, gather, lowering_mesh, put_runs, run_mesh
from ppo_jax.runtime.memory import (  # noqa: F401  (re-exported with the sweep)
    choose_max_parallel,
    device_memory_bytes,
    parameter_count,
    run_memory_estimate,
)
from ppo_jax.runtime.sweep_results import ConfigSummary, SweepProgress, SweepResult, rank, summarize  # noqa: F401
from ppo_jax.runtime.sweep_space import (  # noqa: F401  (the search space, re-exported with the sweep)
    Configuration,
    Distribution,
    check_configurations,
    check_grid,
    grid_configurations,
    inactive_fields,
    make_configurations,
    parse_grid,
    parse_random,
    run_hyperparams,
    sample_configurations,
)

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# ---------------------------------------------------------------------------------------------
# Running


class CompileCounter:
    """Counts XLA backend compilations while active (a `jax.monitoring` listener)."""

    def __init__(self):
        self.names: list[str] = []  # names of the compiled functions, in order

    @property
    def count(self) -> int:
        return len(self.names)

    def __call__(self, event: str, duration: float, *args, **kwargs) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            self.names.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self)


class _BatchTracker:
    """Host callback of the program: turns per-batch updates into sweep-wide `SweepProgress`."""

    def __init__(self, callback, num_runs: int, num_updates: int, steps_per_update: int, batch_size: int):
        self.callback = callback
        self.num_runs, self.num_updates, self.steps_per_update = num_runs, num_updates, steps_per_update
        self.batch_size = batch_size
        self.num_batches = math.ceil(num_runs / batch_size)
        self.batch = 0  # set by the host loop before each batch

    def __call__(self, update, metrics) -> None:
        before = self.batch * self.batch_size
        k = min(self.batch_size, self.num_runs - before)
        u = int(np.max(np.asarray(update)))
        updates_done = before * self.num_updates + k * u
        self.callback(
            SweepProgress(
                runs_done=before + (k if u >= self.num_updates else 0),
                num_runs=self.num_runs,
                updates_done=updates_done,
                total_updates=self.num_runs * self.num_updates,
                env_steps_done=updates_done * self.steps_per_update,
                total_env_steps=self.num_runs * self.num_updates * self.steps_per_update,
                batch=self.batch,
                num_batches=self.num_batches,
                metrics={n: np.asarray(v)[:k] for n, v in metrics.items()},
            )
        )


def _init_run(ctx: TrainContext, args: tuple[jax.Array, Hyperparams]) -> TrainState:
    key, hparams = args
    return init_state(ctx, key, hparams)


def _program(ctx: TrainContext, key_data: jax.Array, hparams: Hyperparams):
    """The compiled unit: K runs from raw key data [K, ...] and `Hyperparams` [K] -> (params, metrics).

    The same computation as `train.train_batch`: every run is initialised by `init_state` and
    then trained by `run_updates` vmapped over the K runs. The initialisation is a `lax.map`
    over runs rather than a vmap (bit-identical parameters): a batched QR in the orthogonal
    initialiser can deadlock XLA's CPU thread pool on machines with few cores.
    """
    keys = jax.random.wrap_key_data(key_data)
    state = lax.map(functools.partial(_init_run, ctx), (keys, hparams))
    state, metrics = run_updates(ctx, state, hparams, ctx.config.num_updates, batched=True)
    return state.params, metrics


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` by repeating the last row (padded runs are computed and discarded)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)])


def _run_batches(
    compiled, key_data: np.ndarray, hparams: Hyperparams, size: int, tracker, mesh: Any = None
) -> tuple[Any, dict]:
    """Run all R runs through `compiled` K = `size` at a time; concatenate the real runs.

    With a `mesh`, each batch's inputs are sharded over its devices along the run axis and the
    results gathered back (from every process) before the padding is dropped.
    """
    num_runs = key_data.shape[0]
    params_parts, metric_parts = [], []
    for b, start in enumerate(range(0, num_runs, size)):
        stop = min(start + size, num_runs)
        if tracker is not None:
            tracker.batch = b
        kd = _pad(key_data[start:stop], size)
        hp = jax.tree.map(lambda x: _pad(x[start:stop], size), hparams)  # noqa: B023
        if mesh is not None:
            kd, hp = put_runs((kd, hp), mesh)
        params, metrics = gather(jax.block_until_ready(compiled(kd, hp)))
        k = stop - start
        params_parts.append(jax.tree.map(lambda x: np.asarray(x)[:k], params))  # noqa: B023
        metric_parts.append({n: np.asarray(v)[:, :k] for n, v in metrics.items()})
    params = jax.tree.map(lambda *xs: np.concatenate(xs), *params_parts)
    metrics = {n: np.concatenate([m[n] for m in metric_parts], axis=1) for n in metric_parts[0]}
    return params, metrics


def _program_bytes(compiled) -> int:
    try:
        mem = compiled.memory_analysis()
        return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return 0


class SweepPlan(NamedTuple):
    """A validated sweep, ready to compile: everything `run_sweep` needs, decided up front."""

    config: PPOConfig
    ctx: TrainContext  # resolved environment and network (no callback yet)
    names: tuple[str, ...]  # swept fields
    configurations: tuple[Configuration, ...]  # C
    seeds: tuple[int, ...]  # S
    max_parallel: int  # runs per batch K
    auto_parallel: bool  # K was chosen from the device's memory
    hparams: Hyperparams  # host float32 leaves [C·S], run r = c·S + s
    key_data: np.ndarray  # raw data of jax.random.key(seed) per run [C·S, ...]
    mesh: Any = None  # devices the run axis is sharded over (K is a multiple of their count)

    @property
    def num_runs(self) -> int:
        return len(self.configurations) * len(self.seeds)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_runs / self.max_parallel)


def plan_sweep(
    config: PPOConfig,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: int | Sequence[int],
    max_parallel: int | None = None,
    env: Any = None,
    env_params: Any = None,
    mesh: Any = None,
) -> SweepPlan:
    """Validate a sweep and resolve its environment; raises `ConfigError` (nothing is compiled).

    grid: {name: values} (Cartesian product, see `grid_configurations`) or a list of
    configurations {name: value} (e.g. from `sample_configurations`); fields not given keep the
    value in `config`. seeds: a count n (config.seed, ..., config.seed + n − 1) or the seeds.
    max_parallel: runs per batch K (default: as many as fit in half the device's free memory),
    rounded up to a multiple of the device count (the padded runs are computed and dropped).
    mesh: a 1-D `jax.sharding.Mesh` to shard the run axis over (default: all devices).
    """
    configurations = grid_configurations(check_grid(grid, config)) if isinstance(grid, Mapping) else list(grid)
    names = check_configurations(config, configurations)
    seeds = resolve_seeds(config, seeds)
    num_runs = len(configurations) * len(seeds)
    ctx = make_context(config, env, env_params)  # resolves the env: errors before compiling
    spec = ctx.rollout.spec
    inactive = inactive_fields(config, spec.discrete)
    for name in names:
        if name in inactive:
            raise ConfigError(name, f"sweeping it would change nothing: {inactive[name]}")
    mesh = run_mesh() if mesh is None else mesh
    size = _round_up(_batch_size(ctx, num_runs, max_parallel), mesh.size)
    run_seeds = np.tile(np.asarray(seeds, np.uint32), len(configurations))  # run r = c·S + s
    return SweepPlan(
        config=config,
        ctx=ctx,
        names=names,
        configurations=tuple(dict(c) for c in configurations),
        seeds=seeds,
        max_parallel=size,
        auto_parallel=max_parallel is None,
        hparams=run_hyperparams(config, configurations, len(seeds)),
        key_data=np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(run_seeds))),
        mesh=mesh,
    )


def _compile(plan: SweepPlan, ctx: TrainContext, size: int):
    example = (_pad(plan.key_data[:size], size), jax.tree.map(lambda x: _pad(x[:size], size), plan.hparams))
    if plan.mesh is not None:
        sharding = NamedSharding(plan.mesh, P(RUN_AXIS))
        example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), example)
    with lowering_mesh(plan.mesh):
        lowered = jax.jit(functools.partial(_program, ctx)).lower(*example)
    return lowered.compile(compiler_options=compiler_options(ctx.config.fast_paths))


def run_sweep(
    plan: SweepPlan,
    callback: Callable[[SweepProgress], None] | None = None,
    confidence: float = 0.95,
    bootstrap_reps: int = 10_000,
) -> SweepResult:
    """Compile the plan's program once and run all runs through it, K at a time.

    If K was chosen automatically and the compiled program turns out larger than half the free
    memory, K is reduced once and the program recompiled (counted in `compiles`).
    callback(SweepProgress) is called on the host after every update of every batch.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError("confidence", f"must be in (0, 1), got {confidence}")
    if bootstrap_reps < 1:
        raise ConfigError("bootstrap_reps", f"must be a positive integer, got {bootstrap_reps}")
    t_start = time.perf_counter()
    config, size = plan.config, plan.max_parallel
    devices = 1 if plan.mesh is None else plan.mesh.size
    tracker = None
    if callback is not None:
        tracker = _BatchTracker(callback, plan.num_runs, config.num_updates, config.batch_size, size)
    ctx = plan.ctx._replace(callback=tracker)
    with CompileCounter() as counter:
        t0 = time.perf_counter()
        compiled = _compile(plan, ctx, size)
        budget = device_memory_bytes() // 2
        if plan.auto_parallel and size > devices and _program_bytes(compiled) > budget:
            size = _round_up(max(1, size * budget // _program_bytes(compiled)), devices)
            compiled = _compile(plan, ctx, size)
            if tracker is not None:
                tracker.batch_size, tracker.num_batches = size, math.ceil(plan.num_runs / size)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        params, flat = _run_batches(compiled, plan.key_data, plan.hparams, size, tracker, plan.mesh)
        run_s = time.perf_counter() - t0

    shape = (len(plan.configurations), len(plan.seeds))
    metrics = {n: v.reshape(v.shape[0], *shape) for n, v in flat.items()}
    params = jax.tree.map(lambda x: x.reshape(*shape, *x.shape[1:]), params)
    summaries = summarize(metrics, plan.configurations, confidence, bootstrap_reps, seed=config.seed)
    return SweepResult(
        config=config,
        names=plan.names,
        configurations=plan.configurations,
        seeds=plan.seeds,
        metrics=metrics,
        params=params,
        summaries=summaries,
        ranking=rank(summaries),
        compiles=counter.count,
        compile_seconds=compile_s,
        run_seconds=run_s,
        wall_seconds=time.perf_counter() - t_start,
        env_steps_per_second=plan.num_runs * config.env_steps / run_s if run_s > 0 else math.nan,
        max_parallel=size,
        num_batches=math.ceil(plan.num_runs / size),
        program_bytes=_program_bytes(compiled),
        confidence=confidence,
    )


def sweep(
    config: PPOConfig,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: int | Sequence[int],
    *,
    max_parallel: int | None = None,
    callback: Callable[[SweepProgress], None] | None = None,
    env: Any = None,
    env_params: Any = None,
    confidence: float = 0.95,
    bootstrap_reps: int = 10_000,
) -> SweepResult:
    """Train every configuration × seed of a sweep in one compiled program: `plan_sweep` then
    `run_sweep`. Raises `ConfigError` before compiling for anything that cannot be swept.

    >>> result = sweep(default_config("CartPole-v1"), {"lr": [1e-4, 3e-4, 1e-3]}, seeds=16)
    >>> [result.summaries[c].iqm for c in result.ranking]
    """
    plan = plan_sweep(config, grid, seeds, max_parallel, env, env_params)
    return run_sweep(plan, callback, confidence, bootstrap_reps)


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _batch_size(ctx: TrainContext, num_runs: int, max_parallel: int | None) -> int:
    if max_parallel is None:
        spec = ctx.rollout.spec
        estimate = run_memory_estimate(ctx.config, int(np.prod(spec.obs_shape)), spec.action_dim, parameter_count(ctx))
        return choose_max_parallel(num_runs, estimate, device_memory_bytes())
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, (int, np.integer)) or max_parallel < 1:
        raise ConfigError("max_parallel", f"must be a positive integer, got {max_parallel!r}")
    return min(int(max_parallel), num_runs)
