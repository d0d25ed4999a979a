"""Planning a run: `plan_run` checks a request and resolves everything `driver.execute` needs
(config, seeds, layout, run folder, resume point) before anything compiles or is written.

A fresh run refuses a folder that holds another run; a resume reads its config, seeds and
layout from the newest checkpoint, or, when the run stopped before its first checkpoint, from
its `config.json`. With several processes every process plans the same run and a request that
any process refuses is refused by all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax.config import PPOConfig, resolve_seeds
from ppo_jax.engine.train import TrainContext, make_context
from ppo_jax.errors import ConfigError
from ppo_jax.runtime import files, folder_lock
from ppo_jax.runtime.checkpoint import CHECKPOINT_DIR, config_from_meta, newest_meta
from ppo_jax.runtime.distributed import agreed, is_writer
from ppo_jax.runtime.runners import RUNNERS, EnvShardedRun, SeedRuns

# Files whose presence means a folder holds a run.
RUN_MARKERS = ("config.json", "summary.json", "metrics.csv", CHECKPOINT_DIR)


class RunPlan(NamedTuple):
    """A checked request: everything `execute` needs, decided before anything compiles."""

    config: PPOConfig
    seeds: list[int]
    out: Path
    runner: Any  # `runners.SeedRuns` or `runners.EnvShardedRun`
    resume: bool
    saved_update: int  # updates done by the checkpoint a resume starts from (0 for a fresh run)
    checkpoint_every: int | None
    keep: int | None
    loggers: tuple = ()  # `runtime.loggers.RunLogger`s fed from the progress callback
    restart: bool = False  # a resume without a checkpoint: the run files but config.json go first
    meta: dict | None = None  # a resume's checkpoint metadata, read once when planning

    @property
    def ctx(self) -> TrainContext:
        return self.runner.ctx


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def refuse_used_run_dir(out: str | Path | None) -> None:
    """A fresh run may not write into a folder that holds another run: its checkpoints would be
    mixed with the new ones. Raises `ConfigError` naming what was found."""
    if out is None:
        return
    advice = files.nonfinite_advice(Path(out))
    if advice:
        raise ConfigError("out", advice)
    found = [name for name in RUN_MARKERS if (Path(out) / name).exists()]
    if found:
        raise ConfigError(
            "out",
            f"{out} already holds a run ({', '.join(found)}); continue it with --resume {out}, replace it with "
            "--overwrite, or choose another --out",
        )


def _context(config: PPOConfig, *, callback, callback_every, env, env_params, network, objective) -> TrainContext:
    every = callback_every or max(1, config.num_updates // 50)
    return make_context(config, env, env_params, callback, every, network, objective=objective)


def _with_loggers(callback: Callable | None, loggers: Sequence) -> Callable | None:
    """The progress callback the driver calls between chunks: the caller's, then every logger's `log`."""
    if not loggers:
        return callback

    def report(update, metrics):
        if callback is not None:
            callback(update, metrics)
        count = int(np.max(np.asarray(update)))
        for logger in loggers:
            logger.log(count, metrics)

    return report


def plan_run(
    config: PPOConfig | None,
    *,
    out: str | Path | None = None,
    seeds: int | Sequence[int] = 1,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    shard_envs: bool = False,
    callback: Callable | None = None,
    callback_every: int | None = None,
    env: Any = None,
    env_params: Any = None,
    network: Any = None,
    objective: Any = None,
    loggers: Sequence = (),
    seed_runs: Callable = SeedRuns,
) -> RunPlan:
    """Check a run request and resolve its environment and policy; raises `ConfigError`,
    `CheckpointError` or `RunFileError` naming the problem before anything is compiled or written.

    With several processes (`jax.distributed`) every process plans the same run (one
    `shard_envs` run in a folder all of them reach); process 0 alone writes into the folder, and a
    request refused by any process is refused by all. `seed_runs(ctx, seeds)`: the runner of S seeds
    in one program (default `SeedRuns` over all devices; a comparison's arms pass their mesh)."""
    loggers = tuple(loggers)
    if loggers and not is_writer():  # process 0 logs; a callback stays, so every process runs the same program
        loggers, callback = (), callback or _ignore
    callback = _with_loggers(callback, loggers)
    ctx_kw = dict(
        callback=callback,
        callback_every=callback_every,
        env=env,
        env_params=env_params,
        network=network,
        objective=objective,
    )
    plan = functools.partial(
        _plan, config, out, seeds, checkpoint_every, keep, resume, overwrite, shard_envs, ctx_kw, seed_runs
    )
    return agreed(plan)._replace(loggers=loggers)


def _ignore(*args: Any) -> None:
    return None


def _plan(config, out, seeds, checkpoint_every, keep, resume, overwrite, shard_envs, ctx_kw, seed_runs) -> RunPlan:
    for name, value in (("checkpoint_every", checkpoint_every), ("keep", keep)):
        _positive(name, value)
    make_ctx = functools.partial(_context, **ctx_kw)
    if resume is not None:
        given = {"config": config, "out": out, "shard_envs": shard_envs, "seeds": seeds != 1, "overwrite": overwrite}
        named = [name for name, value in given.items() if value is not None and value is not False]
        if named:
            raise ConfigError(
                "resume", f"a resumed run keeps its config, seeds, layout and folder; remove {', '.join(named)}"
            )
        given = {kind: ctx_kw[kind] for kind in ("env", "network", "objective")}
        return _plan_resume(Path(resume), make_ctx, checkpoint_every, keep, given, seed_runs)
    if config is None:
        raise ConfigError("config", "give a PPOConfig, or resume= a run folder")
    seed_list = list(resolve_seeds(config, seeds))
    if shard_envs and len(seed_list) != 1:
        raise ConfigError("seeds", "--shard-envs trains one run (its envs split over the devices); remove --seeds")
    _check_processes(shard_envs, out)
    runner = (EnvShardedRun if shard_envs else seed_runs)(make_ctx(config), seed_list)
    config = runner.ctx.config  # names the parts given as objects by their references
    files.refuse_other_kind(out, "run")  # a sweep's or comparison's folder, also with --overwrite
    folder = Path(out or files.default_run_dir(config.env))  # named once the env is known
    # created, checked writable and held by the writing process from here to the end of the run
    with folder_lock.holding(folder, "out", is_writer()) as folder:
        if not overwrite:
            refuse_used_run_dir(out)
        elif out is not None and is_writer():  # other processes read nothing of a fresh run's folder
            files.remove_run_files(folder)
        return RunPlan(config, seed_list, folder, runner, False, 0, checkpoint_every, keep)


def _check_processes(shard_envs: bool, out: str | Path | None) -> None:
    """Several processes train one run: `shard_envs`, in one folder they all name."""
    if jax.process_count() > 1 and not shard_envs:
        raise ConfigError("shard_envs", "several processes train one run: add --shard-envs (seeds: ppo-jax sweep)")
    if jax.process_count() > 1 and out is None:
        raise ConfigError("out", "several processes write one run folder: give --out DIR, a path every process reaches")


def _plan_resume(run_dir: Path, make_ctx: Callable, checkpoint_every, keep, given, seed_runs=SeedRuns) -> RunPlan:
    """The plan of a resumed run: config, seeds and layout from its newest checkpoint, or, for a
    run stopped before its first checkpoint, from its `config.json` (starting at update 0)."""
    if not run_dir.is_dir():
        raise ConfigError("resume", f"run folder {run_dir} does not exist")
    files.refuse_other_kind(run_dir, "run", "resume")
    with folder_lock.holding(run_dir, "resume", is_writer()):
        return _plan_resumed(run_dir, make_ctx, checkpoint_every, keep, given, seed_runs)


def _plan_resumed(run_dir: Path, make_ctx: Callable, checkpoint_every, keep, given, seed_runs) -> RunPlan:
    meta = newest_meta(run_dir)
    if meta is None:
        return _plan_restart(run_dir, make_ctx, checkpoint_every, keep, given, seed_runs)
    config = config_from_meta(meta, given)
    seeds = list(meta["seeds"])
    layout = meta.get("layout", "seeds")
    _check_processes(layout == "shard_envs", run_dir)
    runner = (seed_runs if layout == SeedRuns.layout else RUNNERS[layout])(make_ctx(config), seeds)
    # run_dir is checked writable and held by `_plan_resume`
    return RunPlan(config, seeds, run_dir, runner, True, int(meta["update"]), checkpoint_every, keep, meta=meta)


def _plan_restart(run_dir: Path, make_ctx: Callable, checkpoint_every, keep, given, seed_runs=SeedRuns) -> RunPlan:
    """A run folder without a checkpoint (its run failed or was aborted before the first one):
    the same run again from update 0, with the config and seeds of its `config.json`."""
    advice = files.nonfinite_advice(run_dir)
    if advice:
        raise ConfigError("resume", advice)
    path = run_dir / "config.json"
    if not path.exists():
        raise ConfigError(
            "resume",
            f"no checkpoint found in {run_dir / CHECKPOINT_DIR}, no config.json: {run_dir} holds no ppo_jax run",
        )
    record = files.read_json(path, "the run's config")
    config, seeds, shard_envs = files.config_record(record, path, given)
    _check_processes(shard_envs, run_dir)
    runner = (EnvShardedRun if shard_envs else seed_runs)(make_ctx(config), seeds)
    return RunPlan(config, seeds, run_dir, runner, False, 0, checkpoint_every, keep, restart=True)
