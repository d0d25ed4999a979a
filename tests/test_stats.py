"""Statistics: IQM against hand-derived values and scipy, bootstrap CIs, area under the curve."""

import numpy as np
import pytest

from ppo_jax.runtime import stats

scipy_stats = pytest.importorskip("scipy.stats")


def test_iqm_hand_derived():
    # n = 8: k = 2 cut from each end -> mean(3, 4, 5, 6)
    assert stats.iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)
    # outliers on both ends are cut away entirely
    assert stats.iqm([0, 0, 1, 2, 3, 4, 100, 100]) == pytest.approx(2.5)
    # n = 5: k = floor(1.25) = 1 -> mean(2, 3, 4); whole values are cut, none weighted
    assert stats.iqm([100, 1, 3, 2, 4]) == pytest.approx(3.0)
    # n = 3: k = 0 -> plain mean
    assert stats.iqm([1, 2, 6]) == pytest.approx(3.0)
    assert stats.iqm([7.0]) == pytest.approx(7.0)


@pytest.mark.parametrize("n", list(range(1, 41)))
def test_iqm_matches_scipy_trim_mean(n):
    x = np.random.default_rng(n).standard_cauchy(n)
    assert stats.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25))


def test_iqm_along_axis_and_nan():
    x = np.random.default_rng(0).normal(size=(6, 13, 3))
    np.testing.assert_allclose(stats.iqm(x, axis=1), scipy_stats.trim_mean(x, 0.25, axis=1))
    np.testing.assert_allclose(stats.iqm(x, axis=-1), scipy_stats.trim_mean(x, 0.25, axis=-1))
    assert stats.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None))
    assert np.isnan(stats.iqm([1.0, np.nan, 3.0, 4.0]))
    with pytest.raises(ValueError):
        stats.trimmed_mean([1.0], 0.5)


def test_bootstrap_two_runs_hand_derived():
    # Resampling two runs {0, 1}: the mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles are 0 and 1.
    dist = stats.bootstrap_distribution([0.0, 1.0], np.mean, reps=20_000, seed=1)
    freq = [np.mean(dist == v) for v in (0.0, 0.5, 1.0)]
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.015)
    ci = stats.bootstrap_ci([0.0, 1.0], np.mean, reps=20_000, seed=1)
    assert (ci.point, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_bootstrap_is_seeded_and_collapses_on_constant_scores():
    x = np.random.default_rng(3).normal(size=16)
    assert stats.bootstrap_ci(x, seed=7) == stats.bootstrap_ci(x, seed=7)
    assert stats.bootstrap_ci(x, seed=7) != stats.bootstrap_ci(x, seed=8)
    ci = stats.bootstrap_ci(np.full(10, 3.5))
    assert ci == (3.5, 3.5, 3.5)
    one = stats.bootstrap_ci([2.0])
    assert one == (2.0, 2.0, 2.0)
    assert ci.low <= ci.point <= ci.high


def test_bootstrap_is_stratified_over_tasks():
    # Task 0 scores are all 0 and task 1 scores all 10: stratified resampling keeps one column of
    # each, so every replicate's pooled mean is exactly 5. Pooled (unstratified) resampling would vary.
    scores = np.stack([np.zeros(8), np.full(8, 10.0)], axis=1)  # [runs, tasks]
    ci = stats.bootstrap_ci(scores, np.mean, reps=2000)
    assert (ci.point, ci.low, ci.high) == (5.0, 5.0, 5.0)
    pooled = stats.bootstrap_ci(scores.reshape(-1), np.mean, reps=2000)
    assert pooled.high - pooled.low > 2.0


def test_bootstrap_ci_covers_the_true_mean():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for t in range(trials):
        ci = stats.bootstrap_ci(rng.normal(1.0, 2.0, size=40), np.mean, reps=1000, seed=t)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_chunks_agree_with_one_chunk():
    x = np.random.default_rng(2).normal(size=(12, 3))
    full = stats.bootstrap_distribution(x, stats.iqm, reps=500, seed=4)
    assert full.shape == (500,)
    assert np.isfinite(full).all()
    with pytest.raises(ValueError):
        stats.bootstrap_distribution(x, reps=0)
    with pytest.raises(ValueError):
        stats.bootstrap_ci(np.zeros((0,)))


def test_pointwise_band():
    curves = np.random.default_rng(5).normal(size=(30, 10)) + np.arange(30)[:, None]
    mean, low, high = stats.pointwise_bootstrap_ci(curves, reps=500)
    assert mean.shape == low.shape == high.shape == (30,)
    np.testing.assert_allclose(mean, curves.mean(axis=1))
    assert (low <= mean + 1e-12).all() and (mean <= high + 1e-12).all()
    same = np.repeat(np.arange(5.0)[:, None], 4, axis=1)
    _, low, high = stats.pointwise_bootstrap_ci(same)
    np.testing.assert_array_equal(low, high)


def test_area_under_curve():
    x = np.linspace(0.0, 10.0, 11)
    assert stats.area_under_curve(x, np.full(11, 3.0)) == pytest.approx(3.0)
    assert stats.area_under_curve(x, x) == pytest.approx(5.0)
    # leading NaN (no finished episode yet) is left out: the mean of y = x over [2, 10] is 6
    y = x.copy()
    y[:2] = np.nan
    assert stats.area_under_curve(x, y) == pytest.approx(6.0)
    both = stats.area_under_curve(x, np.stack([x, np.full(11, 3.0)], axis=1))
    np.testing.assert_allclose(both, [5.0, 3.0])
    assert np.isnan(stats.area_under_curve(x, np.full(11, np.nan)))
    # uneven spacing: trapezoids weighted by their width
    assert stats.area_under_curve([0.0, 1.0, 4.0], [0.0, 2.0, 2.0]) == pytest.approx((1.0 + 6.0) / 4.0)
