"""Networks: orthogonal initialisation, the fused rollout forward pass, sampling from pre-drawn noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from ppo_jax.core.distributions import (
    Categorical,
    DiagGaussian,
    categorical_entropy,
    categorical_log_prob,
    gaussian_log_prob,
    log_softmax,
)
from ppo_jax.engine.train import init_state, make_context
from ppo_jax.policies.init import orthogonal, polar_orthogonal, polar_orthogonal_many
from ppo_jax.policies.mlp import fuse_actor_critic, fused_apply, init_actor_critic


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1), (256, 256), (400, 256)])
def test_polar_orthogonal_gives_orthonormal_columns_or_rows(shape):
    for seed in range(5):
        a = jax.random.normal(jax.random.key(seed), shape)
        q = np.asarray(jax.jit(polar_orthogonal)(a), np.float64)
        gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=5e-6)
        # the polar factor is the orthogonal matrix closest to A: U = A (AᵀA)^(-1/2), via NumPy's SVD
        u, _, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)
        np.testing.assert_allclose(q, u @ vt, atol=5e-5)


def test_orthogonal_initializer_scales_by_gain_and_batches_under_vmap():
    init = orthogonal(np.sqrt(2.0))
    w = np.asarray(init(jax.random.key(0), (64, 64)), np.float64)
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(64), atol=1e-5)
    batched = jax.jit(jax.vmap(lambda k: init(k, (8, 16))))(jax.random.split(jax.random.key(1), 5))
    assert batched.shape == (5, 8, 16)
    for w in np.asarray(batched, np.float64):
        np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(8), atol=1e-5)


def test_polar_orthogonal_many_gives_each_matrix_its_own_polar_factor():
    shapes = [(4, 64), (64, 64), (64, 2), (400, 64), (3, 5), (64, 1)]
    keys = jax.random.split(jax.random.key(7), len(shapes))
    mats = [jax.random.normal(k, s) for k, s in zip(keys, shapes, strict=True)]
    for a, q in zip(mats, jax.jit(polar_orthogonal_many)(mats), strict=True):
        assert q.shape == a.shape
        u, _, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)
        np.testing.assert_allclose(np.asarray(q, np.float64), u @ vt, atol=5e-5)


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


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"])
def test_fused_forward_equals_separate_actor_and_critic(env):
    config = ppo_jax.default_config(env)
    ctx = make_context(config)
    params = init_state(ctx, jax.random.key(3), config.hyperparams()).params
    obs = jax.random.normal(jax.random.key(4), (9, *ctx.rollout.spec.obs_shape))
    separate = ctx.policy.network.apply(params, obs)
    fused = fused_apply(ctx.policy.network, fuse_actor_critic(params), obs)
    for a, b in zip(jax.tree.leaves(separate), jax.tree.leaves(fused), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("num_actions", [2, 3, 6, 12])  # unrolled up to 8 actions, jax.nn above
def test_log_softmax_log_prob_and_entropy_match_numpy_and_jax_gradients(num_actions):
    logits = 3.0 * jax.random.normal(jax.random.key(num_actions), (50, num_actions))
    actions = jax.random.randint(jax.random.key(1), (50,), 0, num_actions)
    x = np.asarray(logits, np.float64)
    ref = x - x.max(-1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(log_softmax(logits)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(categorical_log_prob(logits, actions)), ref[np.arange(50), np.asarray(actions)], atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(categorical_entropy(logits)), -(np.exp(ref) * ref).sum(-1), atol=1e-5)

    def objective(fn_log_softmax, z):
        lp = fn_log_softmax(z)
        return jnp.sum(jnp.take_along_axis(lp, actions[:, None], -1)) + jnp.sum(jnp.exp(lp) * lp)

    ours = jax.grad(lambda z: jnp.sum(categorical_log_prob(z, actions)) - jnp.sum(categorical_entropy(z)))(logits)
    theirs = jax.grad(lambda z: objective(jax.nn.log_softmax, z))(logits)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-5)
