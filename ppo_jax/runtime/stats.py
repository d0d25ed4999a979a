"""Statistics for comparing training runs: IQM, stratified-bootstrap confidence intervals and
area under the learning curve (plain NumPy; no JAX).

Following Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice": report the interquartile mean over runs rather than the mean or median, with a
percentile-bootstrap confidence interval whose resampling is stratified over tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# statistic(x, axis=-1) reduces the last axis of x, e.g. np.mean, np.median, iqm.
Statistic = Callable[..., np.ndarray]


class ConfidenceInterval(NamedTuple):
    """A point estimate and its two-sided interval [low, high]."""

    point: float
    low: float
    high: float


def trimmed_mean(x: np.ndarray, proportion: float, axis: int | None = None) -> np.ndarray:
    """Mean after cutting k = floor(proportion · n) of the n values from each end of `axis`.

    Same convention as `scipy.stats.trim_mean` (and hence rliable): whole values are cut, none
    is weighted fractionally. axis=None uses all values. NaNs propagate.
    Shapes: x [..., n, ...] -> x without `axis` (a float for axis=None).
    """
    if not 0.0 <= proportion < 0.5:
        raise ValueError(f"proportion must be in [0, 0.5), got {proportion}")
    x = np.asarray(x, np.float64)
    if axis is None:
        x, axis = x.reshape(-1), 0
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("trimmed_mean of an empty axis")
    k = int(proportion * n)
    kept = np.sort(x, axis=-1)[..., k : n - k]
    nan = np.isnan(x).any(axis=-1)
    out = np.where(nan, np.nan, kept.mean(axis=-1))
    return out[()] if out.ndim == 0 else out


def iqm(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50 % of values (25 % trimmed from each end).

    IQM(x) = mean(x_(k+1), ..., x_(n-k)) with x_(i) sorted ascending and k = floor(n / 4), as
    `scipy.stats.trim_mean(x, 0.25)`. Robust to outlier runs, less noisy than the median.
    Shapes: x [..., n, ...] -> x without `axis`; axis=None pools every value.
    """
    return trimmed_mean(x, 0.25, axis)


def bootstrap_distribution(
    scores: np.ndarray,
    statistic: Statistic = iqm,
    reps: int = 10_000,
    seed: int = 0,
) -> np.ndarray:
    """`reps` bootstrap replicates of `statistic` over runs, resampling stratified over tasks.

    scores: [runs] or [runs, tasks]. Each replicate draws `runs` indices with replacement
    independently for every task (a task never lends its runs to another), then applies
    `statistic(sample, axis=-1)` to all runs × tasks values of the sample pooled.
    Returns [reps]. Deterministic for a given `seed` (numpy Generator, PCG64).
    """
    scores = _as_runs_by_tasks(scores)
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    out = []
    for n in _chunks(reps, runs * tasks):
        idx = rng.integers(0, runs, size=(n, runs, tasks))
        sample = np.take_along_axis(scores[None], idx, axis=1)  # [n, runs, tasks]
        out.append(np.asarray(statistic(sample.reshape(n, runs * tasks), axis=-1), np.float64))
    return np.concatenate(out)


def bootstrap_ci(
    scores: np.ndarray,
    statistic: Statistic = iqm,
    confidence: float = 0.95,
    reps: int = 10_000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile-bootstrap confidence interval of `statistic` over runs, stratified over tasks.

    scores: [runs] or [runs, tasks]. point = statistic(all scores pooled); [low, high] are the
    (1 − c)/2 and (1 + c)/2 quantiles of `bootstrap_distribution` for confidence c.
    With a single run the interval collapses to the point.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = _as_runs_by_tasks(scores)
    point = float(statistic(scores.reshape(1, -1), axis=-1)[0])
    dist = bootstrap_distribution(scores, statistic, reps, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return ConfidenceInterval(point, float(low), float(high))


def pointwise_bootstrap_ci(
    curves: np.ndarray,
    statistic: Statistic = np.mean,
    confidence: float = 0.95,
    reps: int = 1_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A confidence band for a learning curve: at every point, a bootstrap CI over runs.

    curves: [points, runs] (e.g. [updates, seeds]). Each replicate resamples the runs once and
    uses the same runs at every point, so the band follows whole curves. Returns
    (point [points], low [points], high [points]) with point = statistic over runs.
    """
    curves = np.asarray(curves, np.float64)
    if curves.ndim != 2 or curves.shape[1] == 0:
        raise ValueError(f"curves must be [points, runs] with at least one run, got shape {curves.shape}")
    points, runs = curves.shape
    rng = np.random.default_rng(seed)
    parts = []
    for n in _chunks(reps, points * runs):
        idx = rng.integers(0, runs, size=(n, runs))
        parts.append(np.asarray(statistic(curves[:, idx], axis=-1)))  # [points, n]
    dist = np.concatenate(parts, axis=-1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha], axis=-1)
    return np.asarray(statistic(curves, axis=-1)), low, high


def area_under_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised area under a learning curve: the mean of y over the span of x.

    AUC = (1 / (x_last − x_first)) ∫ y dx by the trapezoidal rule, in the units of y, so that
    budgets of different lengths compare. x: [points] increasing (e.g. env steps); y: [points]
    or [points, runs] -> scalar or [runs]. Points where y is NaN (no finished episode yet) are
    left out; a curve with a single finite point gives that value, with none NaN.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        return _auc_1d(x, y)
    return np.array([_auc_1d(x, y[:, r]) for r in range(y.shape[1])])


def _auc_1d(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if y.size == 0:
        return float("nan")
    if y.size == 1 or x[-1] == x[0]:
        return float(y.mean())
    area = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0)
    return float(area / (x[-1] - x[0]))


def _chunks(reps: int, size: int, budget: int = 1 << 22) -> list[int]:
    """Split `reps` replicates of `size` values each into chunks of at most ~`budget` values."""
    if reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")
    step = max(1, budget // max(size, 1))
    return [min(step, reps - start) for start in range(0, reps, step)]


def _as_runs_by_tasks(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with at least one run, got shape {scores.shape}")
    return scores
