"""PPO mathematics against plain NumPy references and hand-derived values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax

GAE_VARIANTS = {"eager": ppo_jax.gae, "jit": jax.jit(ppo_jax.gae)}


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    """GAE as a plain double loop in float64, written from the formula (not from the library)."""
    num_steps, num_envs = rewards.shape
    adv = np.zeros((num_steps, num_envs))
    for n in range(num_envs):
        running = 0.0
        for t in reversed(range(num_steps)):
            term = bool(terminated[t, n])
            ended = term or bool(truncated[t, n])
            bootstrap = 0.0 if term else gamma * float(next_values[t, n])
            delta = float(rewards[t, n]) + bootstrap - float(values[t, n])
            running = delta + (0.0 if ended else gamma * lam * running)
            adv[t, n] = running
    return adv, adv + values


def random_rollout(rng, num_steps=37, num_envs=5, p_term=0.1, p_trunc=0.1):
    rewards = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    values = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    next_values = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    terminated = rng.random((num_steps, num_envs)) < p_term
    truncated = rng.random((num_steps, num_envs)) < p_trunc
    if p_term and p_trunc:  # make sure some steps carry both flags at once
        both = rng.random((num_steps, num_envs)) < 0.05
        both[num_steps // 2, 0] = True
        terminated |= both
        truncated |= both
    return rewards, values, next_values, terminated, truncated


def run_gae(fn, rewards, values, next_values, terminated, truncated, gamma, lam):
    adv, ret = fn(
        jnp.asarray(rewards),
        jnp.asarray(values),
        jnp.asarray(next_values),
        jnp.asarray(terminated),
        jnp.asarray(truncated),
        gamma,
        lam,
    )
    assert adv.shape == rewards.shape and ret.shape == rewards.shape
    return np.asarray(adv), np.asarray(ret)


@pytest.mark.parametrize("variant", GAE_VARIANTS)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.97, 0.0)])
def test_gae_matches_numpy_loop_on_random_episode_ends(variant, seed, gamma, lam):
    rng = np.random.default_rng(seed)
    data = random_rollout(rng)
    terminated, truncated = data[3], data[4]
    assert (terminated & truncated).any() and (terminated & ~truncated).any() and (truncated & ~terminated).any()
    adv, ret = run_gae(GAE_VARIANTS[variant], *data, gamma, lam)
    ref_adv, ref_ret = gae_reference(*data, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("variant", GAE_VARIANTS)
def test_gae_lambda_zero_is_the_td_error(variant):
    rng = np.random.default_rng(10)
    rewards, values, next_values, terminated, truncated = random_rollout(rng)
    gamma = 0.9
    adv, ret = run_gae(GAE_VARIANTS[variant], rewards, values, next_values, terminated, truncated, gamma, 0.0)
    delta = rewards + gamma * np.where(terminated, 0.0, next_values) - values
    np.testing.assert_allclose(adv, delta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret, rewards + gamma * np.where(terminated, 0.0, next_values), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", GAE_VARIANTS)
def test_gae_lambda_one_without_episode_ends_is_discounted_return_minus_value(variant):
    rng = np.random.default_rng(11)
    num_steps, num_envs, gamma = 25, 3, 0.95
    rewards, values, next_values, _, _ = random_rollout(rng, num_steps, num_envs)
    never = np.zeros((num_steps, num_envs), bool)
    next_values[:-1] = values[1:]  # without episode ends s'_t = s_{t+1}
    adv, ret = run_gae(GAE_VARIANTS[variant], rewards, values, next_values, never, never, gamma, 1.0)
    for t in range(num_steps):
        k = np.arange(num_steps - t)
        mc = (gamma**k)[:, None] * rewards[t:]
        # The last step bootstraps from the value of the state after the rollout.
        expected = mc.sum(0) + gamma ** (num_steps - t) * next_values[-1]
        np.testing.assert_allclose(ret[t], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(adv[t], expected - values[t], rtol=1e-5, atol=1e-5)


def hand_case(terminated_at_1: bool, truncated_at_1: bool):
    """Three steps of one env, with an episode end (or none) at t = 1."""
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    values = np.array([[0.5], [0.25], [4.0]], np.float32)
    next_values = np.array([[0.25], [10.0], [7.0]], np.float32)  # V(s'_1) = 10: the true next state
    terminated = np.array([[False], [terminated_at_1], [False]])
    truncated = np.array([[False], [truncated_at_1], [False]])
    return rewards, values, next_values, terminated, truncated


@pytest.mark.parametrize("variant", GAE_VARIANTS)
@pytest.mark.parametrize(
    "term,trunc,a1",
    [
        # truncation: bootstrap from V(s'_1) = 10 -> 2 + 0.5 * 10 - 0.25
        (False, True, 2.0 + 0.5 * 10.0 - 0.25),
        # termination: no bootstrap -> 2 - 0.25
        (True, False, 2.0 - 0.25),
        # both flags together count as terminated
        (True, True, 2.0 - 0.25),
    ],
)
def test_gae_truncation_bootstraps_and_termination_does_not(variant, term, trunc, a1):
    gamma, lam = 0.5, 0.8
    data = hand_case(term, trunc)
    adv, _ = run_gae(GAE_VARIANTS[variant], *data, gamma, lam)
    a2 = 3.0 + gamma * 7.0 - 4.0
    a0 = (1.0 + gamma * 0.25 - 0.5) + gamma * lam * a1
    # The recursion stops at t = 1: A_1 does not include A_2 in either case.
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)


@pytest.mark.parametrize("variant", GAE_VARIANTS)
def test_gae_without_episode_end_continues_the_recursion(variant):
    gamma, lam = 0.5, 0.8
    adv, _ = run_gae(GAE_VARIANTS[variant], *hand_case(False, False), gamma, lam)
    a2 = 3.0 + gamma * 7.0 - 4.0
    a1 = 2.0 + gamma * 10.0 - 0.25 + gamma * lam * a2
    np.testing.assert_allclose(adv[1, 0], a1, rtol=1e-6)


@pytest.mark.parametrize("variant", GAE_VARIANTS)
@pytest.mark.parametrize("flag", ["terminated", "truncated"])
def test_gae_recursion_stops_at_any_episode_end(variant, flag):
    """Changing anything after an episode end leaves the advantages up to that end unchanged."""
    rng = np.random.default_rng(12)
    num_steps, end = 20, 8
    rewards, values, next_values, _, _ = random_rollout(rng, num_steps, 2)
    terminated = np.zeros((num_steps, 2), bool)
    truncated = np.zeros((num_steps, 2), bool)
    (terminated if flag == "terminated" else truncated)[end] = True
    fn = GAE_VARIANTS[variant]
    adv_a, _ = run_gae(fn, rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    later = slice(end + 1, None)
    rewards_b, values_b, next_values_b = rewards.copy(), values.copy(), next_values.copy()
    rewards_b[later] += 100.0
    values_b[later] -= 50.0
    next_values_b[later] += 30.0
    adv_b, _ = run_gae(fn, rewards_b, values_b, next_values_b, terminated, truncated, 0.99, 0.95)
    np.testing.assert_array_equal(adv_a[: end + 1], adv_b[: end + 1])
    assert not np.allclose(adv_a[later], adv_b[later])


def test_gae_accepts_traced_hyperparameters_under_vmap():
    rng = np.random.default_rng(13)
    data = random_rollout(rng)
    gammas = jnp.array([0.9, 0.99], jnp.float32)
    lams = jnp.array([0.0, 0.95], jnp.float32)
    arrays = [jnp.asarray(x) for x in data]
    adv, _ = jax.jit(jax.vmap(lambda g, lam: ppo_jax.gae(*arrays, g, lam)))(gammas, lams)
    for i in range(2):
        ref, _ = gae_reference(*data, float(gammas[i]), float(lams[i]))
        np.testing.assert_allclose(adv[i], ref, rtol=1e-5, atol=2e-5)


# --- clipped surrogate ------------------------------------------------------------------


def surrogate_reference(log_prob, old_log_prob, adv, eps):
    ratio = np.exp(log_prob.astype(np.float64) - old_log_prob)
    return -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv))


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_clipped_surrogate_value_matches_numpy(eps):
    rng = np.random.default_rng(20)
    log_prob = rng.normal(size=64).astype(np.float32) * 0.5
    old_log_prob = rng.normal(size=64).astype(np.float32) * 0.5
    adv = rng.normal(size=64).astype(np.float32)
    got = ppo_jax.clipped_surrogate(jnp.asarray(log_prob), jnp.asarray(old_log_prob), jnp.asarray(adv), eps)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), surrogate_reference(log_prob, old_log_prob, adv, eps), rtol=1e-5)


def test_clipped_surrogate_hand_value():
    # ratios 1.5 (A=2, clipped to 1.2), 0.5 (A=-1, clipped to 0.8 -> min(-0.5, -0.8) = -0.8), 1.0 (A=3)
    log_prob = jnp.log(jnp.array([1.5, 0.5, 1.0]))
    old = jnp.zeros(3)
    adv = jnp.array([2.0, -1.0, 3.0])
    expected = -(1.2 * 2.0 + (-0.8) + 3.0) / 3.0
    np.testing.assert_allclose(float(ppo_jax.clipped_surrogate(log_prob, old, adv, 0.2)), expected, rtol=1e-6)


def test_clipped_surrogate_gradient_is_zero_exactly_where_clipped():
    eps = 0.2
    ratio = np.array([1.5, 1.1, 0.5, 0.9, 0.5, 0.9, 1.5, 1.1, 1.0, 1.0], np.float32)
    adv = np.array([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 2.0, -2.0], np.float32)
    # zero gradient: A > 0 and ratio > 1 + eps, or A < 0 and ratio < 1 - eps
    clipped = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
    assert clipped.sum() == 2 and (~clipped).sum() == 8
    old = np.random.default_rng(21).normal(size=ratio.size).astype(np.float32)
    log_prob = old + np.log(ratio)
    loss = lambda lp: ppo_jax.clipped_surrogate(lp, jnp.asarray(old), jnp.asarray(adv), eps)  # noqa: E731
    grad = np.asarray(jax.grad(loss)(jnp.asarray(log_prob)))
    assert np.all(grad[clipped] == 0.0), grad
    assert np.all(grad[~clipped] != 0.0), grad
    # Unclipped samples: d/d logπ of −mean(ρA) = −ρA / B.
    np.testing.assert_allclose(grad[~clipped], (-ratio * adv / ratio.size)[~clipped], rtol=1e-5)


# --- value loss, KL, clip fraction, explained variance -----------------------------------------


def test_value_loss_unclipped_matches_numpy():
    rng = np.random.default_rng(30)
    v, v_old, ret = (rng.normal(size=50).astype(np.float32) for _ in range(3))
    got = ppo_jax.value_loss(jnp.asarray(v), jnp.asarray(v_old), jnp.asarray(ret))
    np.testing.assert_allclose(float(got), 0.5 * np.mean((v.astype(np.float64) - ret) ** 2), rtol=1e-5)


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_value_loss_clipped_matches_numpy(eps):
    rng = np.random.default_rng(31)
    v, v_old, ret = (rng.normal(size=200).astype(np.float32) for _ in range(3))
    got = ppo_jax.value_loss(jnp.asarray(v), jnp.asarray(v_old), jnp.asarray(ret), eps)
    v64 = v.astype(np.float64)
    v_clip = v_old + np.clip(v64 - v_old, -eps, eps)
    expected = 0.5 * np.mean(np.maximum((v64 - ret) ** 2, (v_clip - ret) ** 2))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    unclipped = 0.5 * np.mean((v64 - ret) ** 2)
    assert expected > unclipped  # the data exercises the clip


def test_value_loss_clipped_hand_value():
    # V moved from 0 to 1 towards R = 2 with eps 0.2: clipped V is 0.2, loss max(1, 3.24) / 2.
    got = ppo_jax.value_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([2.0]), 0.2)
    np.testing.assert_allclose(float(got), 0.5 * 1.8**2, rtol=1e-6)


def test_approx_kl_k3_matches_numpy_is_non_negative_and_zero_at_equal_log_probs():
    rng = np.random.default_rng(40)
    for scale in (0.01, 0.3, 2.0):
        lp = (rng.normal(size=100) * scale).astype(np.float32)
        old = (rng.normal(size=100) * scale).astype(np.float32)
        got = float(ppo_jax.approx_kl_k3(jnp.asarray(lp), jnp.asarray(old)))
        log_ratio = lp.astype(np.float64) - old
        np.testing.assert_allclose(got, np.mean(np.expm1(log_ratio) - log_ratio), rtol=1e-4, atol=1e-9)
        assert got >= 0.0
        for i in range(5):  # each single sample is non-negative as well
            assert float(ppo_jax.approx_kl_k3(jnp.asarray(lp[i : i + 1]), jnp.asarray(old[i : i + 1]))) >= 0.0
    same = jnp.asarray(rng.normal(size=100).astype(np.float32))
    assert float(ppo_jax.approx_kl_k3(same, same)) == 0.0


def test_approx_kl_k3_is_unbiased_for_the_true_kl():
    # Two categorical distributions; samples from pi_old; the k3 mean approaches KL(old || new).
    p_old = np.array([0.5, 0.3, 0.2])
    p_new = np.array([0.3, 0.3, 0.4])
    actions = np.random.default_rng(41).choice(3, size=200_000, p=p_old)
    got = float(ppo_jax.approx_kl_k3(jnp.log(jnp.asarray(p_new[actions])), jnp.log(jnp.asarray(p_old[actions]))))
    np.testing.assert_allclose(got, np.sum(p_old * np.log(p_old / p_new)), rtol=0.03)


def test_clip_fraction_matches_numpy():
    ratio = np.array([1.0, 1.25, 0.75, 1.1, 0.9, 2.0, 0.1, 1.19], np.float32)
    old = np.zeros_like(ratio)
    got = float(ppo_jax.clip_fraction(jnp.log(jnp.asarray(ratio)), jnp.asarray(old), 0.2))
    np.testing.assert_allclose(got, np.mean(np.abs(ratio - 1.0) > 0.2), rtol=1e-6)
    assert got == pytest.approx(4 / 8)
    assert float(ppo_jax.clip_fraction(jnp.zeros(4), jnp.zeros(4), 0.2)) == 0.0


def test_explained_variance_matches_numpy_and_is_nan_free():
    rng = np.random.default_rng(50)
    ret = rng.normal(size=300).astype(np.float32)
    values = (ret + 0.5 * rng.normal(size=300)).astype(np.float32)
    got = float(ppo_jax.explained_variance(jnp.asarray(values), jnp.asarray(ret)))
    np.testing.assert_allclose(got, 1.0 - np.var(ret - values) / np.var(ret), rtol=1e-4)
    assert float(ppo_jax.explained_variance(jnp.asarray(ret), jnp.asarray(ret))) == pytest.approx(1.0)
    constant = float(ppo_jax.explained_variance(jnp.asarray(values), jnp.full(300, 3.0)))
    assert np.isfinite(constant)


def test_normalize_advantages_matches_numpy_and_a_single_sample_is_only_centred():
    rng = np.random.default_rng(60)
    adv = (3.0 + 2.0 * rng.normal(size=128)).astype(np.float32)
    got = np.asarray(ppo_jax.core.losses.normalize_advantages(jnp.asarray(adv)))
    ref = adv.astype(np.float64)
    np.testing.assert_allclose(got, (ref - ref.mean()) / (ref.std() + 1e-8), rtol=1e-5, atol=1e-6)
    assert float(ppo_jax.core.losses.normalize_advantages(jnp.asarray([2.5]))[0]) == 0.0


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("value", [0.1, 0.3, 1.7, 123.456, -2.2, 0.0])
def test_normalize_advantages_of_a_constant_minibatch_is_zero(value, size):
    # float32's mean of these constants is off by about one ulp; dividing that rounding noise by
    # its own std would give every sample the same advantage near ±1.
    adv = jnp.full((size,), value, jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(ppo_jax.core.losses.normalize_advantages)(adv)), 0.0)


def test_normalize_advantages_keeps_nan_visible():
    adv = jnp.asarray([1.0, np.nan, 3.0, 4.0], jnp.float32)
    assert np.all(np.isnan(np.asarray(ppo_jax.core.losses.normalize_advantages(adv))))


@pytest.mark.parametrize("clip_value_loss", [True, False])
def test_ppo_loss_combines_its_terms_with_the_documented_signs_and_coefficients(clip_value_loss):
    # L = L_clip + c_v·L_V − c_e·mean(H), with the value clip using the same ε, against NumPy in
    # float64 (distinct c_v, c_e and ε so that a swapped or sign-flipped term changes the total).
    rng = np.random.default_rng(62)
    log_prob, old_log_prob, entropy, values, old_values, adv, ret = (
        rng.normal(size=96).astype(np.float32) * s for s in (0.4, 0.4, 1.0, 1.0, 1.0, 1.0, 1.0)
    )
    entropy = np.abs(entropy)
    eps, vf_coef, ent_coef = 0.15, 0.7, 0.03
    arrays = (log_prob, old_log_prob, entropy, values, old_values, adv, ret)
    inputs = ppo_jax.core.losses.LossInputs(*map(jnp.asarray, arrays))
    loss, metrics = ppo_jax.ppo_loss(inputs, eps, vf_coef, ent_coef, clip_value_loss)
    v = values.astype(np.float64)
    v_loss = (v - ret) ** 2
    if clip_value_loss:
        v_loss = np.maximum(v_loss, (old_values + np.clip(v - old_values, -eps, eps) - ret) ** 2)
    pg = surrogate_reference(log_prob, old_log_prob, adv, eps)
    expected = pg + vf_coef * 0.5 * np.mean(v_loss) - ent_coef * np.mean(entropy)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["value_loss"]), 0.5 * np.mean(v_loss), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["entropy"]), np.mean(entropy), rtol=1e-5)
