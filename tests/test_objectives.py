"""Objectives: REINFORCE, A2C and the adaptive KL penalty against hand-derived values and gradient signs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.distributions import categorical_kl
from ppo_jax.core.losses import LossInputs
from ppo_jax.core.policy_gradient import (
    a2c_loss,
    adapt_kl_coef,
    discounted_returns,
    kl_penalty_loss,
    policy_gradient_loss,
    reinforce_loss,
)

jax.config.update("jax_numpy_rank_promotion", "raise")

LN2 = math.log(2.0)


def inputs(**fields) -> LossInputs:
    """Two-sample LossInputs with neutral defaults, overridden by `fields`."""
    base = dict(
        log_prob=[0.0, 0.0],
        old_log_prob=[0.0, 0.0],
        entropy=[0.0, 0.0],
        values=[0.0, 0.0],
        old_values=[0.0, 0.0],
        advantages=[0.0, 0.0],
        returns=[0.0, 0.0],
    )
    base.update(fields)
    return LossInputs(**{k: jnp.asarray(v, jnp.float32) for k, v in base.items()})


def grad_log_prob(loss_fn, x: LossInputs) -> np.ndarray:
    """d loss / d log_prob for a loss_fn(LossInputs) -> (loss, metrics)."""
    g = jax.grad(lambda lp: loss_fn(x._replace(log_prob=lp))[0])(x.log_prob)
    return np.asarray(g)


# --- KL penalty (PPO paper §4) --------------------------------------------------------------


def test_kl_penalty_loss_hand_value_with_k3_estimate():
    # ratios 2 and 1/2; A = (1, -2): -mean(ρA) = -(2 - 1)/2 = -0.5
    # k3 = mean((ρ-1) - ln ρ) = ((1 - ln2) + (-0.5 + ln2))/2 = 0.25; β = 0.5 -> +0.125
    # value: ½ mean((1-0)², (0-2)²) = 1.25, c_v = 0.5 -> +0.625; entropy mean 2, c_e = 0.01 -> -0.02
    x = inputs(log_prob=[LN2, -LN2], advantages=[1.0, -2.0], values=[1.0, 0.0], returns=[0.0, 2.0], entropy=[1.0, 3.0])
    loss, metrics = kl_penalty_loss(x, beta=0.5, vf_coef=0.5, ent_coef=0.01)
    assert float(loss) == pytest.approx(-0.5 + 0.125 + 0.625 - 0.02, abs=1e-6)
    assert float(metrics["kl"]) == pytest.approx(0.25, abs=1e-6)
    assert float(metrics["kl_penalty"]) == pytest.approx(0.125, abs=1e-6)
    assert float(metrics["value_loss"]) == pytest.approx(1.25, abs=1e-6)


def test_kl_penalty_loss_uses_given_exact_kl():
    x = inputs(log_prob=[LN2, -LN2], advantages=[1.0, -2.0])
    loss, metrics = kl_penalty_loss(x, beta=0.5, vf_coef=0.0, ent_coef=0.0, kl=jnp.array([0.2, 0.4]))
    assert float(loss) == pytest.approx(-0.5 + 0.5 * 0.3, abs=1e-6)
    assert float(metrics["kl"]) == pytest.approx(0.3, abs=1e-6)


def test_kl_penalty_gradient_signs():
    # At ρ = 1 the k3 term has zero gradient: d/d log π = -A/B, opposite in sign to A.
    x = inputs(advantages=[2.0, -3.0])
    g = grad_log_prob(lambda i: kl_penalty_loss(i, 1.0, 0.0, 0.0), x)
    np.testing.assert_allclose(g, [-1.0, 1.5], atol=1e-6)
    # With A = 0 only the penalty acts, pulling the ratio back to 1: d/d log π = β(ρ - 1)/B.
    x = inputs(log_prob=[LN2, -LN2])
    g = grad_log_prob(lambda i: kl_penalty_loss(i, 0.5, 0.0, 0.0), x)
    np.testing.assert_allclose(g, [0.5 * (2.0 - 1.0) / 2, 0.5 * (0.5 - 1.0) / 2], atol=1e-6)


def test_kl_penalty_is_not_clipped():
    # Far outside any clip range the surrogate still has gradient -ρA/B.
    x = inputs(log_prob=[math.log(3.0), math.log(0.2)], advantages=[1.0, -1.0])
    g = grad_log_prob(lambda i: kl_penalty_loss(i, 0.0, 0.0, 0.0), x)
    np.testing.assert_allclose(g, [-3.0 / 2, 0.2 / 2], rtol=1e-5)


@pytest.mark.parametrize(
    "kl, expected",
    [
        (0.001, 0.5),  # < target / 1.5: halve
        (0.01 / 1.5 - 1e-5, 0.5),
        (0.01 / 1.5 + 1e-5, 1.0),  # inside the band: keep
        (0.01, 1.0),
        (0.015 - 1e-5, 1.0),
        (0.015 + 1e-5, 2.0),  # > 1.5 target: double
        (1.0, 2.0),
    ],
)
def test_adapt_kl_coef_moves_the_right_way(kl, expected):
    assert float(adapt_kl_coef(1.0, kl, 0.01)) == pytest.approx(expected)


def test_adapt_kl_coef_traced_and_vmapped():
    kls = jnp.array([0.0, 0.01, 0.1])
    betas = jax.jit(jax.vmap(adapt_kl_coef, in_axes=(None, 0, None)))(0.3, kls, 0.01)
    np.testing.assert_allclose(np.asarray(betas), [0.15, 0.3, 0.6], rtol=1e-6)
    # Repeated application converges geometrically in the right direction.
    beta = 1.0
    for _ in range(3):
        beta = adapt_kl_coef(beta, 1.0, 0.01)
    assert float(beta) == pytest.approx(8.0)


# --- REINFORCE ------------------------------------------------------------------------------


def test_reinforce_hand_value_without_baseline():
    # -mean(log π · G) = -(2 ln ½ + 1 ln ¼)/2 = 2 ln 2; values ignored, no value loss.
    x = inputs(log_prob=[math.log(0.5), math.log(0.25)], returns=[2.0, 1.0], values=[5.0, -5.0])
    loss, metrics = reinforce_loss(x, vf_coef=0.5, ent_coef=0.0)
    assert float(loss) == pytest.approx(2 * LN2, abs=1e-6)
    assert float(metrics["value_loss"]) == 0.0


def test_reinforce_hand_value_with_baseline():
    # weights G - V = (1, -1): -(ln ½ - ln ¼)/2 = -ln2/2; value ½ mean(1, 1) = 0.5 with c_v = 0.5.
    x = inputs(log_prob=[math.log(0.5), math.log(0.25)], returns=[2.0, 1.0], values=[1.0, 2.0])
    loss, metrics = reinforce_loss(x, vf_coef=0.5, ent_coef=0.0, use_baseline=True)
    assert float(metrics["policy_loss"]) == pytest.approx(-LN2 / 2, abs=1e-6)
    assert float(loss) == pytest.approx(-LN2 / 2 + 0.25, abs=1e-6)


def test_reinforce_gradients():
    x = inputs(log_prob=[math.log(0.5), math.log(0.25)], returns=[2.0, -1.0], values=[0.5, 0.5])
    g = grad_log_prob(lambda i: reinforce_loss(i, 0.0, 0.0), x)
    np.testing.assert_allclose(g, [-1.0, 0.5], atol=1e-6)  # -G/B
    g = grad_log_prob(lambda i: reinforce_loss(i, 0.0, 0.0, use_baseline=True), x)
    np.testing.assert_allclose(g, [-0.75, 0.75], atol=1e-6)  # -(G - b)/B
    # The baseline gets no gradient from the policy term (only from the value loss).
    gv = jax.grad(lambda v: reinforce_loss(x._replace(values=v), 0.0, 0.0, use_baseline=True)[0])(x.values)
    np.testing.assert_array_equal(np.asarray(gv), [0.0, 0.0])


def test_discounted_returns_against_numpy_loop():
    rng = np.random.default_rng(0)
    t, n, gamma = 12, 3, 0.9
    rewards = rng.normal(size=(t, n)).astype(np.float32)
    terminated = rng.random((t, n)) < 0.15
    truncated = rng.random((t, n)) < 0.1
    expected = np.zeros((t, n))
    running = np.zeros(n)
    for i in reversed(range(t)):
        running = rewards[i] + gamma * running * ~(terminated[i] | truncated[i])
        expected[i] = running
    got = discounted_returns(jnp.asarray(rewards), jnp.asarray(terminated), jnp.asarray(truncated), gamma)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


# --- A2C ------------------------------------------------------------------------------------


def test_a2c_hand_value():
    # -(ln ½ · 1 + ln ¼ · (-2))/2 = -(−ln2 + 4 ln2)/2 = -1.5 ln2; value ½ mean(1, 4) = 1.25 (c_v 0.5);
    # entropy mean 1 (c_e 0.1).
    x = inputs(
        log_prob=[math.log(0.5), math.log(0.25)],
        advantages=[1.0, -2.0],
        values=[1.0, 0.0],
        returns=[0.0, 2.0],
        entropy=[0.5, 1.5],
    )
    loss, metrics = a2c_loss(x, vf_coef=0.5, ent_coef=0.1)
    assert float(metrics["policy_loss"]) == pytest.approx(-1.5 * LN2, abs=1e-6)
    assert float(loss) == pytest.approx(-1.5 * LN2 + 0.625 - 0.1, abs=1e-6)


def test_a2c_has_no_ratio_and_no_clipping():
    x = inputs(log_prob=[math.log(5.0), math.log(0.1)], advantages=[1.0, -1.0])
    g = grad_log_prob(lambda i: a2c_loss(i, 0.0, 0.0), x)
    np.testing.assert_allclose(g, [-0.5, 0.5], atol=1e-6)  # -A/B whatever the ratio
    other = x._replace(old_log_prob=jnp.array([3.0, -7.0]))
    assert float(a2c_loss(other, 0.5, 0.0)[0]) == float(a2c_loss(x, 0.5, 0.0)[0])
    ga = jax.grad(lambda a: a2c_loss(x._replace(advantages=a), 0.0, 0.0)[0])(x.advantages)
    np.testing.assert_array_equal(np.asarray(ga), [0.0, 0.0])


def test_a2c_value_gradient_moves_value_towards_return():
    x = inputs(values=[1.0, -1.0], returns=[3.0, -4.0])
    gv = jax.grad(lambda v: a2c_loss(x._replace(values=v), 1.0, 0.0)[0])(x.values)
    np.testing.assert_allclose(np.asarray(gv), [(1.0 - 3.0) / 2, (-1.0 + 4.0) / 2], atol=1e-6)


def test_policy_gradient_loss_stops_weight_gradient():
    g = jax.grad(lambda w: policy_gradient_loss(jnp.array([0.3, -0.2]), w))(jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0])


# --- categorical KL -------------------------------------------------------------------------


def test_categorical_kl_against_numpy():
    rng = np.random.default_rng(1)
    lp = rng.normal(size=(5, 4))
    lq = rng.normal(size=(5, 4))
    p = np.exp(lp) / np.exp(lp).sum(-1, keepdims=True)
    q = np.exp(lq) / np.exp(lq).sum(-1, keepdims=True)
    expected = (p * np.log(p / q)).sum(-1)
    got = np.asarray(categorical_kl(jnp.asarray(lp, jnp.float32), jnp.asarray(lq, jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert np.all(got >= 0)
    np.testing.assert_allclose(np.asarray(categorical_kl(jnp.asarray(lp), jnp.asarray(lp + 3.0))), 0.0, atol=1e-6)
