"""GRPO: group advantages, the k3 reference KL and the loss, against NumPy and hand-derived values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.grpo import group_advantages, grpo_loss, reference_kl, repeat_prompts

jax.config.update("jax_numpy_rank_promotion", "raise")

LN2 = math.log(2.0)


def k3_per_token(log_prob, ref_log_prob) -> np.ndarray:
    """reference_kl of each element on its own (shape [n])."""
    one = lambda a, b: reference_kl(a[None], b[None])  # noqa: E731
    return np.asarray(jax.vmap(one)(jnp.asarray(log_prob), jnp.asarray(ref_log_prob)))


def test_group_advantages_hand_value():
    # mean 2, population std sqrt(2/3): (−1.2247, 0, 1.2247)
    adv = np.asarray(group_advantages(jnp.array([[1.0, 2.0, 3.0]])))
    s = math.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(adv, [[-1 / s, 0.0, 1 / s]], rtol=1e-5)


def test_group_advantages_zero_mean_unit_std_per_group():
    rng = np.random.default_rng(0)
    rewards = rng.normal(loc=rng.normal(size=(6, 1)) * 5, scale=rng.uniform(0.1, 3, size=(6, 1)), size=(6, 8))
    adv = np.asarray(group_advantages(jnp.asarray(rewards, jnp.float32)))
    np.testing.assert_allclose(adv.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(adv.std(axis=1), 1.0, rtol=1e-4)
    expected = (rewards - rewards.mean(1, keepdims=True)) / rewards.std(1, keepdims=True)
    np.testing.assert_allclose(adv, expected, rtol=1e-4, atol=1e-5)


def test_group_advantages_equal_rewards_are_zero():
    rewards = jnp.array([[0.7, 0.7, 0.7, 0.7], [1.0, 2.0, 1.0, 2.0], [-3.0, -3.0, -3.0, -3.0]])
    adv = np.asarray(group_advantages(rewards))
    np.testing.assert_array_equal(adv[0], 0.0)
    np.testing.assert_array_equal(adv[2], 0.0)
    np.testing.assert_allclose(adv[1], [-1.0, 1.0, -1.0, 1.0], rtol=1e-6)
    assert np.all(np.isfinite(adv))


def test_group_is_a_row_of_repeated_prompts():
    prompts = jnp.array([[1, 2], [3, 4]])
    rep = np.asarray(repeat_prompts(prompts, 3))
    np.testing.assert_array_equal(rep.reshape(2, 3, 2)[0], [[1, 2]] * 3)
    np.testing.assert_array_equal(rep.reshape(2, 3, 2)[1], [[3, 4]] * 3)


def test_reference_kl_hand_value():
    # x = π_ref/π_θ = ½: x − ln x − 1 = ln2 − ½
    assert float(reference_kl(jnp.array([math.log(0.5)]), jnp.array([math.log(0.25)]))) == pytest.approx(
        LN2 - 0.5, abs=1e-6
    )


def test_reference_kl_non_negative_and_zero_for_identical_policies():
    rng = np.random.default_rng(1)
    lp = jnp.asarray(rng.normal(size=200) * 3, jnp.float32)
    ref = jnp.asarray(rng.normal(size=200) * 3, jnp.float32)
    assert np.all(k3_per_token(lp, ref) >= 0)
    np.testing.assert_array_equal(k3_per_token(lp, lp), 0.0)
    assert float(reference_kl(lp, lp)) == 0.0


def test_reference_kl_is_unbiased_for_the_true_kl():
    # E_{a ~ π_θ}[k3(a)] = Σ_a π_θ(a) (π_ref/π_θ − log(π_ref/π_θ) − 1) = KL(π_θ ‖ π_ref) exactly.
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(6))
    q = rng.dirichlet(np.ones(6))
    per_action = k3_per_token(jnp.asarray(np.log(p), jnp.float32), jnp.asarray(np.log(q), jnp.float32))
    assert float(np.dot(p, per_action)) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-4)


def test_grpo_loss_hand_value_clipped():
    # ratio 1.5 for both completions (L = 1), ε = 0.2, A = (1, −1):
    # min(1.5, 1.2) = 1.2 and min(−1.5, −1.2) = −1.5 -> loss −(1.2 − 1.5)/2 = 0.15; ref = π_θ: KL 0.
    lp = jnp.full((2, 1), math.log(1.5))
    old = jnp.zeros((2, 1))
    loss, metrics = grpo_loss(lp, old, lp, jnp.array([1.0, -1.0]), clip_eps=0.2, kl_coef=0.5)
    assert float(loss) == pytest.approx(0.15, abs=1e-6)
    assert float(metrics["kl"]) == 0.0
    assert float(metrics["clip_frac"]) == 1.0


def test_grpo_loss_hand_value_kl():
    # ratio 1 and A = (1, −1) -> surrogate −mean(A) = 0. π_ref/π_θ per token [[2, 1], [1, ½]]:
    # k3 = [[1 − ln2, 0], [0, ln2 − ½]] -> mean 0.125; β = 0.04 -> loss 0.005.
    lp = jnp.log(jnp.array([[0.25, 0.5], [0.3, 0.4]]))
    ref = lp + jnp.array([[LN2, 0.0], [0.0, -LN2]])
    loss, metrics = grpo_loss(lp, lp, ref, jnp.array([1.0, -1.0]), clip_eps=0.2, kl_coef=0.04)
    assert float(metrics["kl"]) == pytest.approx(0.125, abs=1e-6)
    assert float(loss) == pytest.approx(0.005, abs=1e-6)


def test_grpo_loss_gradient_signs():
    # At ratio 1 with π_ref = π_θ: d loss / d log π_{b,t} = −A_b / (B·L), the sign opposite to A.
    lp = jnp.log(jnp.full((3, 2), 0.3))
    adv = jnp.array([2.0, -1.0, 0.0])
    g = np.asarray(jax.grad(lambda x: grpo_loss(x, lp, lp, adv, 0.2, 0.1)[0])(lp))
    np.testing.assert_allclose(g, -np.repeat(np.asarray(adv)[:, None], 2, axis=1) / 6, atol=1e-7)
    # With A = 0 the KL term pulls log π toward log π_ref: gradient β(1 − π_ref/π_θ)/(B·L).
    ref = lp + jnp.array([[LN2, -LN2], [0.0, 0.0], [0.0, 0.0]])
    g = np.asarray(jax.grad(lambda x: grpo_loss(x, lp, ref, jnp.zeros(3), 0.2, 0.6)[0])(lp))
    np.testing.assert_allclose(g[0], [0.6 * (1 - 2.0) / 6, 0.6 * (1 - 0.5) / 6], atol=1e-6)
    np.testing.assert_allclose(g[1:], 0.0, atol=1e-7)
