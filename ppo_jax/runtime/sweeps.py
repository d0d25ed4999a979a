"""Sweeps: seeds × hyperparameter configurations trained as one compiled program.

A sweep is C configurations (values of traced `Hyperparams` fields, `sweep_space`) × S seeds =
R runs. Run r = c·S + s trains configuration c from key `jax.random.key(seeds[s])`, the run that
`ppo-jax train --seed seeds[s]` with those values trains (equal up to float32 rounding, which
depends on the batch size). All R runs go through one program, `jax.vmap`-ed over a
`Hyperparams` pytree with leaves [K] and K keys; when R runs do not fit in memory they are run
K at a time through that same compiled program (the last batch padded), so the number of
compiles does not grow with the number of batches. The runs go through the executor in chunks
(`runtime.executor`, `runners.SweepRuns`), so a sweep with a folder has checkpoints, resumes
exactly (`plan_sweep_resume`) and stops at a checkpoint on SIGINT/SIGTERM. Every mistake raises
`ConfigError` before compiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ppo_jax.config import (
    ConfigError,
    Hyperparams,
    PPOConfig,
    resolve_seeds,
)
from ppo_jax.engine.train import TrainContext, make_context
from ppo_jax.errors import RunFileError
from ppo_jax.runtime import files, folder_lock
from ppo_jax.runtime.checkpoint import CHECKPOINT_DIR, newest_meta
from ppo_jax.runtime.compile_cache import CompileCounter  # noqa: F401  (re-exported with the sweep)
from ppo_jax.runtime.distributed import is_writer, run_mesh
from ppo_jax.runtime.executor import execute
from ppo_jax.runtime.memory import (  # noqa: F401  (re-exported with the sweep)
    choose_max_parallel,
    device_memory_bytes,
    parameter_count,
    run_memory_estimate,
)
from ppo_jax.runtime.planning import RunPlan
from ppo_jax.runtime.records import SweepRecord
from ppo_jax.runtime.runners import SweepRuns
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

PLAN_FILE = "sweep_plan.json"  # the sweep's request: base config, configurations, seeds, search

# ---------------------------------------------------------------------------------------------
# Running


class _Progress:
    """The executor's host callback(update [R], metrics [R]) as sweep-wide `SweepProgress`."""

    def __init__(self, callback, num_runs: int, num_updates: int, steps_per_update: int, num_batches: int):
        self.callback, self.num_runs, self.num_updates = callback, num_runs, num_updates
        self.steps_per_update, self.num_batches = steps_per_update, num_batches

    def __call__(self, update, metrics) -> None:
        u = int(np.max(np.asarray(update)))
        done = self.num_runs * u
        self.callback(
            SweepProgress(
                runs_done=self.num_runs if u >= self.num_updates else 0,
                num_runs=self.num_runs,
                updates_done=done,
                total_updates=self.num_runs * self.num_updates,
                env_steps_done=done * self.steps_per_update,
                total_env_steps=self.num_runs * self.num_updates * self.steps_per_update,
                batch=0,
                num_batches=self.num_batches,
                metrics={n: np.asarray(v) for n, v in metrics.items()},
            )
        )


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
    mesh: Any = None  # devices the run axis is sharded over (K is a multiple of their count)
    out: Path | None = None  # the sweep folder (None: nothing written, no checkpoints)
    checkpoint_every: int | None = None  # updates between checkpoints (None: at the end only)
    keep: int | None = None  # checkpoints kept (None: all)
    resume: bool = False  # continue from the newest checkpoint in `out`
    saved_update: int = 0  # updates that checkpoint holds
    search: dict | None = None  # how the configurations were made (recorded in sweep.json)
    meta: dict | None = None  # the metadata of the checkpoint a resume starts from

    @property
    def num_runs(self) -> int:
        return len(self.configurations) * len(self.seeds)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_runs / self.max_parallel)

    @property
    def run_seeds(self) -> list[int]:
        """The key seed of every run, r = c·S + s."""
        return [int(s) for s in np.tile(np.asarray(self.seeds), len(self.configurations))]


def plan_sweep(
    config: PPOConfig,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: int | Sequence[int],
    max_parallel: int | None = None,
    env: Any = None,
    env_params: Any = None,
    mesh: Any = None,
    *,
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    overwrite: bool = False,
    search: dict | None = None,
) -> SweepPlan:
    """Validate a sweep and resolve its environment; raises `ConfigError` (nothing is compiled).

    grid: {name: values} (Cartesian product, see `grid_configurations`) or a list of
    configurations {name: value} (e.g. from `sample_configurations`); fields not given keep the
    value in `config`. seeds: a count n (config.seed, ..., config.seed + n − 1) or the seeds.
    max_parallel: runs per batch K (default: as many as fit in half the device's free memory),
    rounded up to a multiple of the device count (the padded runs are computed and dropped).
    mesh: a 1-D `jax.sharding.Mesh` to shard the run axis over (default: all devices).
    out: the sweep folder (sweep.json, per-run folders, checkpoints every `checkpoint_every`
    updates, the newest `keep` kept); a folder holding a sweep is refused unless `overwrite`.
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
    _check_checkpoints(checkpoint_every, keep, out)
    mesh = run_mesh() if mesh is None else mesh
    size = _round_up(_batch_size(ctx, num_runs, max_parallel), mesh.size)
    if out is not None:
        out = _claim(Path(out), overwrite)
    return SweepPlan(
        config=ctx.config,
        ctx=ctx,
        names=names,
        configurations=tuple(dict(c) for c in configurations),
        seeds=seeds,
        max_parallel=size,
        auto_parallel=max_parallel is None,
        hparams=run_hyperparams(config, configurations, len(seeds)),
        mesh=mesh,
        out=out,
        checkpoint_every=checkpoint_every,
        keep=keep,
        search=search,
    )


# What a sweep writes into its folder.
SWEEP_FILES = ("sweep.json", PLAN_FILE, "runs", "curves.png", CHECKPOINT_DIR)


def _check_checkpoints(checkpoint_every: int | None, keep: int | None, out) -> None:
    for name, value in (("checkpoint_every", checkpoint_every), ("keep", keep)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if checkpoint_every is not None and out is None:
        where = "give out= (--out; several processes: one path they all reach)"
        raise ConfigError("checkpoint_every", f"checkpoints go into the sweep folder: {where}")


def _claim(out: Path, overwrite: bool) -> Path:
    """The sweep folder, created; one holding another command's folder is refused, one holding a
    sweep only with `overwrite` (its files are removed)."""
    if not is_writer():
        return out
    files.refuse_other_kind(out, "sweep")
    with folder_lock.holding(out) as out:  # created, checked writable, held until the sweep's run ends
        files.claim_folder(out, SWEEP_FILES, "a sweep", overwrite)
        for name in out.glob("sensitivity_*.png") if overwrite else ():
            name.unlink()
        return out


def plan_sweep_resume(
    folder: str | Path,
    max_parallel: int | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    env: Any = None,
    env_params: Any = None,
) -> SweepPlan:
    """The plan of a stopped sweep, from its folder: configurations, seeds and base config from
    its `sweep_plan.json`, the updates done from its newest checkpoint (none: from update 0)."""
    folder, record, config, seeds = files.read_plan(folder, "sweep", PLAN_FILE, ("config", "configurations", "seeds"))
    with folder_lock.holding(folder, "resume", is_writer()):  # until the sweep's run ends
        return _resumed(folder, record, config, seeds, max_parallel, checkpoint_every, keep, env, env_params)


def _resumed(folder, record, config, seeds, max_parallel, checkpoint_every, keep, env, env_params) -> SweepPlan:
    configurations = record["configurations"]
    plan = plan_sweep(config, configurations, seeds, max_parallel, env, env_params, search=record.get("search"))
    _check_checkpoints(checkpoint_every, keep, folder)
    meta = newest_meta(folder)
    update = 0 if meta is None else int(meta["update"])
    if meta is not None and (meta.get("layout") != "sweep" or len(meta["seeds"]) != plan.num_runs):
        raise RunFileError(folder / CHECKPOINT_DIR, f"does not hold the {plan.num_runs} runs of {folder / PLAN_FILE}")
    # folder is checked writable and held by the writing process (`plan_sweep_resume`)
    return plan._replace(
        out=folder, checkpoint_every=checkpoint_every, keep=keep, resume=update > 0, saved_update=update, meta=meta
    )


def run_sweep(
    plan: SweepPlan,
    callback: Callable[[SweepProgress], None] | None = None,
    confidence: float = 0.95,
    bootstrap_reps: int = 10_000,
    *,
    notify: Callable[[str, str], None] | None = None,
    handle_signals: bool = False,
    loggers: Sequence = (),
) -> SweepResult:
    """Run all runs of the plan through one compiled chunk program, K at a time, in chunks between
    checkpoints (`runtime.executor`), and write the sweep folder when the plan has one.

    If K was chosen automatically and the compiled program turns out larger than half the free
    memory, K is reduced once and the program recompiled (counted in `compiles`).
    callback(SweepProgress) is called on the host between chunks, after every update.
    `handle_signals`: SIGINT/SIGTERM stop at the next checkpoint (`RunStopped`).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError("confidence", f"must be in (0, 1), got {confidence}")
    if bootstrap_reps < 1:
        raise ConfigError("bootstrap_reps", f"must be a positive integer, got {bootstrap_reps}")
    config = plan.config
    progress = None
    if callback is not None:
        progress = _Progress(callback, plan.num_runs, config.num_updates, config.batch_size, plan.num_batches)
    runner = SweepRuns(
        plan.ctx._replace(callback=progress, callback_every=1),
        plan.run_seeds,
        plan.hparams,
        plan.max_parallel,
        plan.mesh,
        plan.auto_parallel,
    )
    run = RunPlan(
        config,
        plan.run_seeds,
        plan.out,  # several processes: a folder every process reaches, as for a run
        runner,
        plan.resume,
        plan.saved_update,
        plan.checkpoint_every,
        plan.keep,
        meta=plan.meta,
    )
    record = SweepRecord(plan, confidence, bootstrap_reps, tuple(loggers))
    execute(run, record, notify, handle_signals)
    return record.result


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
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
) -> SweepResult:
    """Train every configuration × seed of a sweep in one compiled program: `plan_sweep` then
    `run_sweep`. Raises `ConfigError` before compiling for anything that cannot be swept.

    >>> result = sweep(default_config("CartPole-v1"), {"lr": [1e-4, 3e-4, 1e-3]}, seeds=16)
    >>> [result.summaries[c].iqm for c in result.ranking]
    """
    plan = plan_sweep(config, grid, seeds, max_parallel, env, env_params, out=out, checkpoint_every=checkpoint_every)
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
