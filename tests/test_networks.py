"""Networks: initialisation against Flax's own initialisers, sampling from pre-drawn noise (the fast paths
against the plain ones: test_fast_paths.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from ppo_jax.core.distributions import (
    Categorical,
    DiagGaussian,
    categorical_log_prob,
    gaussian_log_prob,
)
from ppo_jax.engine.train import init_state, make_context
from ppo_jax.policies.mlp import init_actor_critic


@pytest.mark.parametrize(("env", "log_std"), [("CartPole-v1", 0.0), ("Pendulum-v1", -0.5), ("Breakout-MinAtar", 0.0)])
def test_init_actor_critic_matches_the_flax_initializers_layer_by_layer(env, log_std):
    """Same tree, shapes and dtypes as `network.init`; every kernel orthogonal with the gain that
    Flax's own initializer gives it (read off ‖W‖²_F / min(m, n) of `network.init`'s kernel)."""
    rollout_ctx = make_context(ppo_jax.default_config(env)).rollout
    network = make_context(ppo_jax.default_config(env)).policy.network
    obs = jnp.zeros((1, *rollout_ctx.spec.obs_shape), jnp.float32)
    reference = network.init(jax.random.key(0), obs, log_std)
    params = jax.jit(lambda k: init_actor_critic(network, k, obs, log_std))(jax.random.key(1))
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(reference)[0])
    kernels = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        want = np.asarray(flat_ref[path], np.float64)
        got = np.asarray(leaf, np.float64)
        assert got.shape == want.shape and leaf.dtype == flat_ref[path].dtype
        if path[-1].key == "kernel":
            kernels += 1
            gain_sq = np.sum(want**2) / min(want.shape)
            gram = got.T @ got if got.shape[0] >= got.shape[1] else got @ got.T
            np.testing.assert_allclose(gram, gain_sq * np.eye(len(gram)), atol=1e-5 * max(gain_sq, 1.0))
            assert not np.allclose(got, want)  # drawn, not copied
        else:  # biases and log-std are constants
            np.testing.assert_array_equal(got, want)
    assert kernels == 2 * (len(network.hidden_sizes) + 1)
    other = jax.jit(lambda k: init_actor_critic(network, k, obs, log_std))(jax.random.key(2))
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(other), strict=True)
    assert all(not np.allclose(a, b) for a, b in pairs if a.ndim == 2)


def test_lecun_normal_init_has_variance_one_over_fan_in_on_every_kernel():
    """kernel_init="lecun_normal": Flax's default (truncated normal, Var = 1/fan_in) on every
    kernel including both heads; biases 0; a different draw per key."""
    config = ppo_jax.default_config("Breakout-MinAtar", kernel_init="lecun_normal")
    ctx = make_context(config)
    network = ctx.policy.network
    obs = jnp.zeros((1, *ctx.rollout.spec.obs_shape), jnp.float32)
    params = jax.jit(lambda k: init_actor_critic(network, k, obs, 0.0, "lecun_normal"))(jax.random.key(1))
    state = init_state(ctx, jax.random.key(1), config.hyperparams())  # the family passes kernel_init on
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        w = np.asarray(leaf, np.float64)
        if path[-1].key != "kernel":
            np.testing.assert_array_equal(w, 0.0)
            continue
        std = 1.0 / np.sqrt(w.shape[0])
        assert np.abs(w).max() <= 2.0 * std / 0.87962566103423978 + 1e-6  # truncated at 2 sigma of z
        if w.size >= 1000:
            np.testing.assert_allclose(w.std(), std, rtol=0.1)
    other = init_actor_critic(network, jax.random.key(2), obs, 0.0, "lecun_normal")
    assert not np.allclose(jax.tree.leaves(params)[1], jax.tree.leaves(other)[1])
    ortho = init_state(make_context(config.replace(kernel_init="orthogonal")), jax.random.key(1), config.hyperparams())
    assert not np.allclose(jax.tree.leaves(ortho.params)[1], jax.tree.leaves(state.params)[1])
    w = np.asarray(jax.tree.leaves(state.params)[1], np.float64)  # a LeCun-normal kernel, not orthogonal
    assert w.shape[0] > 100 and abs(w.std() * np.sqrt(w.shape[0]) - 1.0) < 0.1


def test_gumbel_sampling_matches_softmax_frequencies_and_log_prob():
    logits = jnp.array([[0.3, -1.0, 1.2]])
    noise = Categorical(3).noise(jax.random.key(0), (40_000,))
    actions, log_prob = Categorical(3).sample_with_noise(jnp.broadcast_to(logits, (40_000, 3)), noise)
    p = np.exp(np.asarray(logits[0], np.float64))
    p /= p.sum()
    freq = np.bincount(np.asarray(actions), minlength=3) / actions.size
    np.testing.assert_allclose(freq, p, atol=0.01)
    np.testing.assert_allclose(np.asarray(log_prob), np.log(p)[np.asarray(actions)], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(categorical_log_prob(logits[0], jnp.int32(2))), np.log(p[2]), rtol=1e-5)


def test_gaussian_sampling_log_prob_from_noise_equals_density():
    mean = jnp.array([[0.5, -1.0]])
    log_std = jnp.array([[-0.3, 0.2]])
    noise = DiagGaussian(2).noise(jax.random.key(1), (6,))
    actions, log_prob = DiagGaussian(2).sample_with_noise(
        (jnp.broadcast_to(mean, (6, 2)), jnp.broadcast_to(log_std, (6, 2))), noise
    )
    sigma = np.exp(np.asarray(log_std[0], np.float64))
    a = np.asarray(actions, np.float64)
    expected = np.sum(-0.5 * ((a - np.asarray(mean[0])) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gaussian_log_prob(mean, log_std, actions)), expected, rtol=1e-5)
