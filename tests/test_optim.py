"""The one optimizer builder (`core.optim`): its schedules against hand-written formulas, and its
first step against Adam derived by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.optim import linear_to_zero, make_optimizer, warmup_cosine


def test_warmup_cosine_against_its_formula():
    lr, steps = 2.0, 100
    schedule = warmup_cosine(lr, steps)
    warm = steps // 20  # 5 % warm-up

    def expected(k):
        if k < warm:
            return lr * k / warm
        return lr / 10 + (lr - lr / 10) * 0.5 * (1 + math.cos(math.pi * (k - warm) / (steps - warm)))

    for k in (0, 1, warm, 30, 50, 99, steps):
        assert float(schedule(k)) == pytest.approx(expected(k), rel=1e-5, abs=1e-7), k
    assert float(warmup_cosine(1.0, 10)(1)) == pytest.approx(1.0)  # warm-up of at least one step


def test_linear_to_zero_against_its_formula():
    schedule = linear_to_zero(0.5, 8)
    np.testing.assert_allclose([float(schedule(k)) for k in range(10)], [0.5 * (1 - k / 8) for k in range(9)] + [0.0])


@pytest.mark.parametrize("eps", [1e-8, 1e-5])
def test_first_step_is_clipped_adam(eps):
    """Adam's first bias-corrected step is −lr · g / (|g| + eps), with g scaled to global norm ≤ c."""
    opt = make_optimizer(0.1, 1.0, eps)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # global norm 5 -> scaled by 1/5
    updates, _ = opt.update(grads, opt.init(params), params)
    g = np.array([0.6, 0.0, 0.8])
    got = np.concatenate([np.asarray(updates["a"]), np.asarray(updates["b"])])
    np.testing.assert_allclose(got, -0.1 * g / (np.abs(g) + eps), rtol=1e-5, atol=1e-9)
