"""TRPO: conjugate gradient, Fisher-vector products against an explicit Fisher matrix, the
trust-region step and its line search, and learning on CartPole."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from ppo_jax.core.distributions import categorical_kl
from ppo_jax.core.trpo import conjugate_gradient, fisher_vector_product, line_search, natural_step, trpo_step
from ppo_jax.runtime.files import final_returns

OBS, ACTIONS, STATES = 3, 4, 50


def test_conjugate_gradient_solves_a_positive_definite_system():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    m = a @ a.T + 0.5 * np.eye(8)
    b = rng.normal(size=8)
    x = conjugate_gradient(lambda v: jnp.asarray(m, jnp.float32) @ v, jnp.asarray(b, jnp.float32), iterations=30)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(m, b), rtol=1e-3, atol=1e-4)
    # exact in n steps for a diagonal matrix with n distinct entries; zero right-hand side stays 0
    d = jnp.asarray([1.0, 2.0, 5.0])
    np.testing.assert_allclose(np.asarray(conjugate_gradient(lambda v: d * v, jnp.ones(3), 3)), 1 / np.asarray(d), 1e-5)
    np.testing.assert_array_equal(np.asarray(conjugate_gradient(lambda v: d * v, jnp.zeros(3), 5)), 0.0)


def _linear_policy():
    """A softmax policy with logits = s @ W (θ = W flattened) on fixed random states."""
    rng = np.random.default_rng(1)
    states = jnp.asarray(rng.normal(size=(STATES, OBS)), jnp.float32)
    theta_old = jnp.asarray(0.5 * rng.normal(size=OBS * ACTIONS), jnp.float32)
    logits = lambda theta: states @ theta.reshape(OBS, ACTIONS)  # noqa: E731
    kl = lambda theta: jnp.mean(categorical_kl(logits(theta_old), logits(theta)))  # noqa: E731
    return states, theta_old, logits, kl


def _fisher_by_formula(states, theta):
    """F = mean_s J_sᵀ (diag p_s − p_s p_sᵀ) J_s, with ∂logit_a/∂W_ib = s_i δ_ab (NumPy)."""
    s = np.asarray(states, np.float64)
    w = np.asarray(theta, np.float64).reshape(OBS, ACTIONS)
    z = s @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    fisher = np.zeros((OBS * ACTIONS, OBS * ACTIONS))
    for k in range(STATES):
        jac = np.kron(s[k][:, None], np.eye(ACTIONS)).T  # [A, OBS·A]: d logits / d vec(W)
        fisher += jac.T @ (np.diag(p[k]) - np.outer(p[k], p[k])) @ jac
    return fisher / STATES


def test_fisher_vector_product_equals_the_explicit_fisher_matrix():
    states, theta_old, _, kl = _linear_policy()
    fisher = _fisher_by_formula(states, theta_old)
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = rng.normal(size=OBS * ACTIONS)
        got = fisher_vector_product(kl, theta_old, jnp.asarray(v, jnp.float32))
        np.testing.assert_allclose(np.asarray(got), fisher @ v, rtol=1e-4, atol=1e-5)


def test_natural_step_reaches_the_kl_radius_of_the_quadratic_model():
    states, theta_old, _, kl = _linear_policy()
    fisher = _fisher_by_formula(states, theta_old) + 1e-3 * np.eye(OBS * ACTIONS)
    g = np.random.default_rng(3).normal(size=OBS * ACTIONS)
    fvp = lambda v: jnp.asarray(fisher, jnp.float32) @ v  # noqa: E731
    step = np.asarray(natural_step(jnp.asarray(g, jnp.float32), fvp, 0.01), np.float64)
    direction = np.linalg.solve(fisher, g)  # the natural gradient F⁻¹g
    cosine = step @ direction / np.linalg.norm(step) / np.linalg.norm(direction)
    assert cosine > 0.99
    np.testing.assert_allclose(0.5 * step @ fisher @ step, 0.01, rtol=2e-2)


def _problem():
    """Surrogate mean(ρ·A) for random actions and advantages under the linear policy."""
    states, theta_old, logits, kl = _linear_policy()
    rng = np.random.default_rng(4)
    actions = jnp.asarray(rng.integers(0, ACTIONS, STATES))
    adv = jnp.asarray(rng.normal(size=STATES), jnp.float32)
    log_prob = lambda theta: jnp.take_along_axis(jax.nn.log_softmax(logits(theta)), actions[:, None], 1)[:, 0]  # noqa: E731
    old = log_prob(theta_old)
    surrogate = lambda theta: jnp.mean(jnp.exp(log_prob(theta) - old) * adv)  # noqa: E731
    return surrogate, kl, theta_old


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2, 0.05])
def test_accepted_step_improves_the_surrogate_within_the_kl_radius(max_kl):
    surrogate, kl, theta_old = _problem()
    step = trpo_step(surrogate, kl, theta_old, max_kl)
    assert float(step.step_fraction) > 0  # a step was accepted
    assert float(kl(step.theta)) <= max_kl
    np.testing.assert_allclose(float(step.kl), float(kl(step.theta)), rtol=1e-5)
    assert float(surrogate(step.theta)) > float(surrogate(theta_old))
    assert float(jnp.max(jnp.abs(step.theta - theta_old))) > 0


def test_line_search_keeps_the_old_parameters_when_no_step_is_acceptable():
    surrogate, kl, theta_old = _problem()
    uphill = -1e3 * jax.grad(surrogate)(theta_old)  # every fraction lowers the surrogate
    step = line_search(surrogate, kl, theta_old, uphill, 0.01)
    np.testing.assert_array_equal(np.asarray(step.theta), np.asarray(theta_old))
    assert float(step.step_fraction) == 0.0


def test_trpo_learns_cartpole():
    cfg = ppo_jax.default_config("CartPole-v1", objective="trpo", num_envs=8, num_steps=128, total_timesteps=80_000)
    keys = jax.vmap(jax.random.key)(np.arange(2, dtype=np.uint32))
    result = jax.jit(ppo_jax.make_train_batch(cfg))(keys)
    returns = np.asarray(result.metrics["episode_return"])
    early = np.nanmean(returns[:5])
    assert np.all(final_returns(returns) > 3 * early), (early, final_returns(returns))
    assert np.all(np.asarray(result.metrics["approx_kl"]) <= cfg.max_kl * (1 + 1e-5))
