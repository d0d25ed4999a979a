"""The record writers of `ppo-jax sweep` and `ppo-jax compare`: what each command leaves in its
folder. (`ppo-jax train`'s is `driver.TrainRecord`, `ppo-jax eval`'s `evaluation.write_eval`.)

- `SweepRecord`: `sweep_plan.json` before the first chunk (what `--resume` rebuilds the sweep
  from); at the end `sweep.json`, `curves.png`, `sensitivity_<field>.png` and one folder per run,
  `runs/<configuration>/seed<N>/`, holding what a training run's folder holds for `ppo-jax eval`
  (`config.json`, `summary.json`, `metrics.csv`, `policy-seed<N>.npz`).
- `write_compare`: `compare.json` and `compare.png` (each arm's run folder, `arms/<objective>/`, is
  written by `compare.ArmRecord`, a `driver.TrainRecord`).
"""

from __future__ import annotations

import math
import re
import resource
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppo_jax.config import traced_fields
from ppo_jax.engine.evaluate import Acting
from ppo_jax.runtime import compile_cache, files, plots
from ppo_jax.runtime.distributed import is_writer, topology
from ppo_jax.runtime.policy_file import export_policy
from ppo_jax.runtime.sweep_results import SweepResult, rank, summarize

# ---------------------------------------------------------------------------------------------
# Sweeps


def run_dir_name(index: int, hyperparams: dict[str, float]) -> str:
    """Folder name of a configuration, e.g. c03_lr=0.0003_clip_eps=0.1."""
    parts = [f"c{index:02d}", *(f"{n}={v:.4g}" for n, v in hyperparams.items())]
    return re.sub(r"[^A-Za-z0-9=._+-]", "_", "_".join(parts))


class SweepRecord:
    """The executor's record writer for a sweep (`sweeps.run_sweep`); `result` holds the
    `SweepResult` once the sweep has finished."""

    command = "ppo-jax sweep"
    stop_on_nonfinite = False  # a NaN/Inf run is reported per configuration (nonfinite_seeds)

    def __init__(self, sweep, confidence: float, reps: int, loggers: tuple = ()):
        self.sweep, self.confidence, self.reps, self.loggers = sweep, confidence, reps, loggers
        self.started_at = time.perf_counter()
        self.result: SweepResult | None = None

    @property
    def folder(self) -> Path | None:
        return self.sweep.out if is_writer() else None

    def finished(self, plan, notify) -> None:
        return None  # the folder's files are written again from the final checkpoint

    def begin(self, plan, notify) -> None:
        if self.folder is None:
            return
        sweep = self.sweep
        request = {
            "config": sweep.config.to_dict(),
            "configurations": list(sweep.configurations),
            "seeds": list(sweep.seeds),
            "search": sweep.search or {},
        }
        files.write_json(self.folder / "sweep_plan.json", request)

    def started(self, plan, notify) -> None:
        return None

    def running(self, plan, state) -> None:
        return None

    def nonfinite(self, plan, store, err) -> None:
        return None

    def finish(self, plan, state, chunks) -> dict[str, Any]:
        self.result = sweep_result(self.sweep, plan, state, chunks, self.confidence, self.reps)
        if self.folder is None:
            return {}
        cache = {"compile_cache_dir": compile_cache.current_dir(), "compile_cache_hit": chunks.cache_hit()}
        args = (self.sweep, self.loggers, self.started_at, self.reps, cache)
        return write_sweep(self.folder, self.result, plan, state, *args)


def sweep_result(sweep, plan, state, chunks, confidence: float, reps: int) -> SweepResult:
    """The sweep's `SweepResult` from the executor's final state [R] and metrics [U, R]."""
    shape = (len(sweep.configurations), len(sweep.seeds))
    metrics = {n: v.reshape(v.shape[0], *shape) for n, v in chunks.joined().items()}
    params = jax.tree.map(lambda x: np.asarray(x).reshape(*shape, *x.shape[1:]), state.params)
    summaries = summarize(metrics, sweep.configurations, confidence, reps, seed=sweep.config.seed)
    run_s = chunks.timing["run"]
    steps = (sweep.config.num_updates - plan.saved_update) * sweep.config.batch_size * sweep.num_runs
    runner = plan.runner
    return SweepResult(
        config=sweep.config,
        names=sweep.names,
        configurations=sweep.configurations,
        seeds=sweep.seeds,
        metrics=metrics,
        params=params,
        summaries=summaries,
        ranking=rank(summaries),
        compiles=chunks.compiles,
        compile_seconds=chunks.timing["compile"],
        run_seconds=run_s,
        wall_seconds=time.perf_counter() - chunks.started,
        env_steps_per_second=steps / run_s if run_s > 0 else math.nan,
        max_parallel=runner.size,
        num_batches=runner.num_batches,
        program_bytes=runner.program_bytes,
        confidence=confidence,
    )


def sweep_record(result: SweepResult, search: dict, extra: dict) -> dict:
    """The content of sweep.json: per configuration (ranked) its values and statistics, plus timings."""
    configurations = []
    for position, c in enumerate(result.ranking, start=1):
        s = result.summaries[c]
        configurations.append(
            {
                "rank": position,
                "index": c,
                "hyperparams": s.hyperparams,
                "run_dir": f"runs/{run_dir_name(c, s.hyperparams)}",
                "final_returns": s.final_returns.tolist(),
                "final_return_mean": s.final_return_mean,
                "iqm": s.iqm,
                "ci_low": s.ci_low,
                "ci_high": s.ci_high,
                "auc": s.auc,
                "nonfinite_seeds": s.nonfinite,
                "params_sha256": [files.params_sha256(_run(result.params, c, i)) for i in range(len(result.seeds))],
            }
        )
    total_steps = len(result.configurations) * len(result.seeds) * result.config.env_steps
    return {
        "env": result.config.env,
        "swept": list(result.names),
        "search": search,
        "seeds": list(result.seeds),
        "num_configurations": len(result.configurations),
        "num_runs": len(result.configurations) * len(result.seeds),
        "total_timesteps_per_run": result.config.env_steps,
        "num_updates": result.config.num_updates,
        "statistics": {
            "final_return": "mean episodic return over the last 10% of updates, per seed",
            "iqm": "interquartile mean of final_returns over seeds (25% trimmed each side, scipy trim_mean)",
            "ci": f"{result.confidence:g} percentile bootstrap of the IQM over seeds",
            "auc": "mean over seeds of the area under the return curve divided by its env-step span",
        },
        "confidence": result.confidence,
        "configurations": configurations,
        "compiles": result.compiles,
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "wall_seconds": result.wall_seconds,
        "env_steps_per_second": result.env_steps_per_second,
        "total_env_steps": total_steps,
        "max_parallel": result.max_parallel,
        "num_batches": result.num_batches,
        "program_bytes": result.program_bytes,
        "config": result.config.to_dict(),
        **extra,
    }


def _run(tree: Any, c: int, s: int) -> Any:
    return jax.tree.map(lambda x: x[c, s], tree)


def write_run_files(out: Path, result: SweepResult, plan, state, loggers: tuple) -> None:
    """runs/<configuration>/seed<N>/: metrics.csv (the `ppo-jax train` format), config.json (the
    run as `ppo-jax train` would record it), summary.json and policy-seed<N>.npz (what
    `ppo-jax eval` reads); each configuration's curves through `loggers`."""
    from ppo_jax.runtime import loggers as logging
    from ppo_jax.runtime.driver import policy_description

    ctx, config = plan.ctx, result.config
    description = policy_description(ctx)
    acting = Acting(ctx.policy, ctx.dist, ctx.rollout.spec)
    stats = state.env.obs_stats if config.normalize_obs else None
    num_seeds = len(result.seeds)
    for c, point in enumerate(result.configurations):
        conf_dir = out / "runs" / run_dir_name(c, point)
        for s, seed in enumerate(result.seeds):
            folder = conf_dir / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            metrics = {n: v[:, c, s, None] for n, v in result.metrics.items()}
            files.write_metrics_csv(folder / "metrics.csv", metrics, [seed])
            params, r = _run(result.params, c, s), c * num_seeds + s
            if description is not None:
                run_stats = None if stats is None else jax.tree.map(lambda x: x[r], stats)  # noqa: B023
                export_policy(folder / f"policy-seed{seed}.npz", acting, params, run_stats, config.env, description)
            files.write_json(folder / "config.json", {**config.to_dict(), **point, "seed": seed, "seeds": [seed]})
            finals = files.final_returns(metrics["episode_return"])
            summary = {
                "env": config.env,
                "seeds": [seed],
                "hyperparams": point,
                "num_updates": config.num_updates,
                "final_return_per_seed": finals.tolist(),
                "final_return_mean": float(finals[0]),
                "params_sha256": files.params_sha256(params),
                "policies_exported": description is not None,
                "sweep": str(out),
            }
            files.write_json(folder / "summary.json", summary)
        if loggers:
            hparams = {**{n: float(getattr(config, n)) for n in traced_fields(config)}, **point}
            for logger in loggers:
                logger.open(conf_dir, {**config.to_dict(), **hparams}, result.seeds, False)
            logging.feed(loggers, {n: v[:, c] for n, v in result.metrics.items()})
            for logger in loggers:
                logger.close(None)


def write_sweep(out: Path, result: SweepResult, plan, state, sweep, loggers, started: float, reps: int, cache: dict):
    """The sweep folder: per-run folders, plots, sweep.json (returned)."""
    t0 = time.perf_counter()
    write_run_files(out, result, plan, state, loggers)
    plots.plot_sweep_curves(out / "curves.png", result)
    for name in result.names:
        plots.plot_sensitivity(out / f"sensitivity_{name}.png", result, name)
    extra = {
        "bootstrap_reps": reps,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "write_seconds": time.perf_counter() - t0,
        "command_wall_seconds": time.perf_counter() - started,
        "checkpoint_every": sweep.checkpoint_every,
        "resumed_at_update": plan.saved_update if plan.resume else None,
        **cache,
        **topology(),
    }
    record = sweep_record(result, sweep.search or {}, extra)
    files.write_json(out / "sweep.json", record)
    return record


# ---------------------------------------------------------------------------------------------
# Comparisons


def compare_rows(results) -> list[dict[str, Any]]:
    """compare.json's rows, one per objective, best IQM first."""
    rows = []
    for r in sorted(results, key=lambda r: -np.nan_to_num(r.iqm, nan=-np.inf)):
        mean = float(np.nanmean(r.final_returns)) if np.isfinite(r.final_returns).any() else math.nan
        rows.append(
            {
                "objective": r.objective,
                "num_epochs": r.config.num_epochs,
                "num_minibatches": r.config.num_minibatches,
                "final_returns": r.final_returns.tolist(),
                "final_return_mean": mean,
                "iqm": r.iqm,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "auc": r.auc,
                "seconds": r.seconds,
                "compile_seconds": r.compile_seconds,
                "params_sha256": r.params_sha256,
                "run_dir": r.run_dir,
            }
        )
    return rows


def write_compare(out: Path, config, seeds, results, devices: int = 1) -> dict[str, Any]:
    """compare.json and compare.png in `out`; returns compare.json's content."""
    record = {
        "env": config.env,
        "seeds": list(seeds),
        "config": config.to_dict(),
        "objectives": compare_rows(results),
        "devices": devices,
    }
    files.write_json(out / "compare.json", record)
    plots.plot_compare(out / "compare.png", results, config.env)
    return record
