"""A sweep's results: per-configuration statistics over seeds (IQM with a bootstrap CI, AUC)
and the ranking, as plain NumPy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ppo_jax.config import (
    PPOConfig,
)
from ppo_jax.runtime import stats
from ppo_jax.runtime.files import final_returns
from ppo_jax.runtime.sweep_space import Configuration

# ---------------------------------------------------------------------------------------------
# Results


class SweepProgress(NamedTuple):
    """What the progress callback receives after every update of every batch."""

    runs_done: int  # runs finished
    num_runs: int
    updates_done: int  # updates finished, summed over runs
    total_updates: int  # num_runs × num_updates
    env_steps_done: int  # environment steps, summed over runs
    total_env_steps: int
    batch: int  # index of the running batch
    num_batches: int
    metrics: dict[str, np.ndarray]  # this update's metrics for the real runs of the batch, each [k]


class ConfigSummary(NamedTuple):
    """Per-configuration result over seeds. Statistics use the seeds whose final return is finite."""

    index: int  # position in `SweepResult.configurations`
    hyperparams: Configuration  # the swept values
    final_returns: np.ndarray  # [S] mean return over the last 10 % of updates per seed
    final_return_mean: float
    iqm: float  # interquartile mean of final_returns
    ci_low: float  # percentile-bootstrap CI of the IQM over seeds
    ci_high: float
    auc: float  # mean over seeds of the normalised area under the learning curve
    nonfinite: int  # seeds in which some update produced NaN/Inf (see `train.NONFINITE_FLAGS`)


class SweepResult(NamedTuple):
    """Everything a sweep produced. Arrays are NumPy; metrics are [num_updates, C, S]."""

    config: PPOConfig  # the base config (non-swept values)
    names: tuple[str, ...]  # swept fields
    configurations: tuple[Configuration, ...]  # C configurations (swept values only)
    seeds: tuple[int, ...]  # S seeds
    metrics: dict[str, np.ndarray]  # each [U, C, S]
    params: Any  # final parameters, leaves [C, S, ...]
    summaries: tuple[ConfigSummary, ...]  # C, in configuration order
    ranking: tuple[int, ...]  # configuration indices, best IQM first
    compiles: int  # XLA programs compiled from lowering to the last batch
    compile_seconds: float
    run_seconds: float
    wall_seconds: float  # compiling, running and statistics
    env_steps_per_second: float  # environment steps of all runs / run_seconds
    max_parallel: int  # runs per batch (K)
    num_batches: int
    program_bytes: int  # argument + output + temporary bytes of the compiled program (0 if unknown)
    confidence: float


def summarize(
    metrics: Mapping[str, np.ndarray],
    configurations: Sequence[Configuration],
    confidence: float = 0.95,
    reps: int = 10_000,
    seed: int = 0,
) -> tuple[ConfigSummary, ...]:
    """Per-configuration final-return statistics from metrics [U, C, S].

    final_returns = `runs.final_returns` per seed; iqm and its stratified percentile-bootstrap CI
    over seeds (`stats.bootstrap_ci`); auc = mean over seeds of `stats.area_under_curve` of the
    episode return against env steps.
    """
    returns = np.asarray(metrics["episode_return"], np.float64)
    steps = np.asarray(metrics["env_steps"], np.float64)
    out = []
    for c, point in enumerate(configurations):
        per_seed = final_returns(returns[:, c, :])
        finite = per_seed[np.isfinite(per_seed)]
        if finite.size:
            ci = stats.bootstrap_ci(finite, stats.iqm, confidence, reps, seed)
            mean, point_iqm, low, high = float(finite.mean()), ci.point, ci.low, ci.high
        else:
            mean = point_iqm = low = high = math.nan
        aucs = stats.area_under_curve(steps[:, c, 0], returns[:, c, :])
        auc = float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else math.nan
        bad = int((np.asarray(metrics["nonfinite"])[:, c, :] > 0).any(axis=0).sum()) if "nonfinite" in metrics else 0
        out.append(ConfigSummary(c, dict(point), per_seed, mean, point_iqm, low, high, auc, bad))
    return tuple(out)


def rank(summaries: Sequence[ConfigSummary]) -> tuple[int, ...]:
    """Configuration indices by IQM (then AUC) descending; NaN last."""

    def key(s: ConfigSummary):
        iqm = s.iqm if math.isfinite(s.iqm) else -math.inf
        auc = s.auc if math.isfinite(s.auc) else -math.inf
        return (-iqm, -auc, s.index)

    return tuple(s.index for s in sorted(summaries, key=key))
