"""The CPU fast paths (`ppo_jax.fast_paths`) against the plain Flax/JAX path they replace.

Tolerances: outputs of the same function from the same parameters agree to float32 rounding
(fused heads 1e-6, log-softmax 1e-6, GRU hidden states 1e-5, gradients 1e-4 relative); the
random draws (initial kernels, minibatch order) differ for the same key, so those agree in
distribution (orthonormality to 1e-5, matching entry statistics) and in the learning curve.
"""

from __future__ import annotations

import argparse
import functools
import re

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

import ppo_jax
from ppo_jax import fast_paths
from ppo_jax.commands.common import add_config_flags, config_from_args
from ppo_jax.config import PPOConfig, config_from_record
from ppo_jax.core.distributions import Categorical, categorical_entropy, categorical_log_prob
from ppo_jax.engine.train import make_context
from ppo_jax.errors import ConfigError
from ppo_jax.runtime.cpu import compiler_options

GRU_TINY = dict(network="gru", hidden_sizes=(8, 8), rnn_size=6, num_envs=4, num_steps=8, num_minibatches=2)


def _params(env: str, fast: bool, seeds: int = 1, **overrides):
    """The family's initial parameters of `seeds` runs [S, ...] with the switch at `fast`."""
    cfg = ppo_jax.default_config(env, fast_paths=fast, **overrides)
    ctx = make_context(cfg)
    obs = jnp.zeros((1, *ctx.rollout.spec.obs_shape), jnp.float32)
    keys = jax.random.split(jax.random.key(11), seeds)
    return ctx, jax.jit(jax.vmap(lambda k: ctx.policy.init(k, obs, -0.5)))(keys)


# --- the switch --------------------------------------------------------------------------------


def test_switch_is_a_recorded_static_field_that_reaches_every_part():
    cfg = ppo_jax.default_config("CartPole-v1", fast_paths=False)
    assert cfg.to_dict()["fast_paths"] is False
    assert config_from_record(cfg.to_dict()).fast_paths is False
    assert config_from_record({k: v for k, v in cfg.to_dict().items() if k != "fast_paths"}).fast_paths is True
    with pytest.raises(ConfigError, match="fast_paths"):
        PPOConfig(fast_paths="no")
    ctx = make_context(cfg)
    assert ctx.policy.fast_paths is False and ctx.dist.fast_paths is False
    assert ctx.split.keywords["permutation"] is fast_paths.PLAIN.permutation
    assert make_context(cfg.replace(network="gru")).policy.fast_paths is False
    assert fast_paths.select(True) is fast_paths.FAST and fast_paths.select(False) is fast_paths.PLAIN
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    assert config_from_args(parser.parse_args(["--no-fast-paths"])).fast_paths is False
    assert config_from_args(parser.parse_args([])).fast_paths is True


def test_plain_path_compiles_with_xla_defaults():
    assert compiler_options(False) is None
    assert compiler_options(True) == {"xla_backend_optimization_level": 1}  # the tests run on the CPU


# --- initialisation: Newton–Schulz in one draw vs Flax's QR per kernel ---------------------------


def test_newton_schulz_gives_the_polar_factor_of_each_matrix():
    shapes = [(4, 64), (64, 64), (64, 2), (400, 64), (3, 5), (64, 1)]
    keys = jax.random.split(jax.random.key(7), len(shapes))
    mats = [jax.random.normal(k, s) for k, s in zip(keys, shapes, strict=True)]
    for a, q in zip(mats, jax.jit(fast_paths.polar_orthogonal_many)(mats), strict=True):
        assert q.shape == a.shape
        u, _, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)  # U Vᵀ = A (AᵀA)^(-1/2)
        np.testing.assert_allclose(np.asarray(q, np.float64), u @ vt, atol=5e-5)


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_fast_and_plain_init_are_orthogonal_with_the_same_gains_and_entry_statistics(env):
    """Same tree; every kernel W [m, n] of both paths has WᵀW (or WWᵀ) = g² I to 1e-5 with the
    family's gain g; pooled over 32 seeds, the entries of each kernel have the same distribution
    (two-sample Kolmogorov–Smirnov, p > 1e-3; variance g² / max(m, n) within 5 %)."""
    _, fast = _params(env, True, seeds=32)
    _, plain = _params(env, False, seeds=32)
    assert jax.tree.structure(fast) == jax.tree.structure(plain)
    flat_fast = jax.tree_util.tree_flatten_with_path(fast)[0]
    for (path, a), b in zip(flat_fast, jax.tree.leaves(plain), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if path[-1].key != "kernel":
            np.testing.assert_array_equal(a, b)  # zero biases, log_std at init_log_std
            continue
        m, n = a.shape[1:]
        gain2 = np.mean(np.sum(b[0] ** 2)) / min(m, n)
        for w in (a, b):
            gram = w.transpose(0, 2, 1) @ w if m >= n else w @ w.transpose(0, 2, 1)
            np.testing.assert_allclose(gram, np.broadcast_to(gain2 * np.eye(min(m, n)), gram.shape), atol=1e-5)
            np.testing.assert_allclose(np.var(w), gain2 / max(m, n), rtol=0.05)
        assert scipy_stats.ks_2samp(a.ravel(), b.ravel()).pvalue > 1e-3, path


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (3, 3, 4, 16), (1, 5)])
def test_orthogonal_is_flax_orthogonal_without_lapack(shape):
    """`fast_paths.orthogonal(g)` gives Flax's `orthogonal(g)` kernel for the same key (LAPACK
    QR, unbatched, as the reference) to 2e-6."""
    key = jax.random.key(7)
    got = fast_paths.orthogonal(1.5)(key, shape)
    want = flax.linen.initializers.orthogonal(1.5)(key, shape)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("overrides", [{}, GRU_TINY, {"network": "cnn"}], ids=["mlp", "gru", "cnn"])
def test_initialisation_over_seeds_calls_no_lapack(fast, overrides):
    """The vmapped initialisation of every family on both paths compiles without a LAPACK call:
    two batched LAPACK QRs at once can deadlock XLA's CPU thread pool on 2 cores."""
    env = "Breakout-MinAtar" if overrides.get("network") == "cnn" else "CartPole-v1"
    cfg = ppo_jax.default_config(env, fast_paths=fast, **overrides)
    ctx = make_context(cfg)
    obs = jnp.zeros((1, *ctx.rollout.spec.obs_shape), jnp.float32)
    init = jax.jit(jax.vmap(lambda k: ctx.policy.init(k, obs, -0.5)))
    program = init.lower(jax.random.split(jax.random.key(0), 4)).as_text()
    targets = re.findall(r'custom_call_target\s*=\s*"([^"]+)"|stablehlo\.custom_call\s+@(\w+)', program)
    assert not [t for t in map("".join, targets) if "lapack" in t.lower()], targets


def test_fast_and_plain_lecun_normal_have_the_same_entry_statistics():
    _, fast = _params("CartPole-v1", True, seeds=32, kernel_init="lecun_normal")
    _, plain = _params("CartPole-v1", False, seeds=32, kernel_init="lecun_normal")
    for a, b in zip(jax.tree.leaves(fast["params"]), jax.tree.leaves(plain["params"]), strict=True):
        if a.ndim == 3:  # kernels [S, m, n]: Var = 1 / m, truncated at 2σ of z
            bound = 2.0 / np.sqrt(a.shape[1]) / 0.87962566103423978 + 1e-6
            for w in (np.asarray(a), np.asarray(b)):
                assert np.abs(w).max() <= bound
                np.testing.assert_allclose(w.var(), 1.0 / a.shape[1], rtol=0.1)
            assert scipy_stats.ks_2samp(np.ravel(a), np.ravel(b)).pvalue > 1e-3


# --- fused vs separate actor-critic --------------------------------------------------------------


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_fused_rollout_network_equals_the_separate_heads_with_the_same_parameters(env):
    fast_ctx, params = _params(env, True)
    plain_ctx = make_context(fast_ctx.config.replace(fast_paths=False))
    params = jax.tree.map(lambda x: x[0], params)
    obs = jax.random.normal(jax.random.key(4), (9, *fast_ctx.rollout.spec.obs_shape))
    fused = fast_ctx.policy.rollout_apply(params)
    assert isinstance(fused.args[-1], fast_paths.FusedActorCritic)
    got = fused((), obs, None)
    want = plain_ctx.policy.rollout_apply(params)((), obs, None)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


# --- GRU recurrence: hand-written backward pass vs lax.scan of the cell --------------------------


@pytest.fixture(scope="module")
def gru_case():
    cfg = ppo_jax.default_config("StatelessCartPole-v1", **GRU_TINY)
    fast = make_context(cfg).policy
    plain = make_context(cfg.replace(fast_paths=False)).policy
    params = fast.init(jax.random.key(0), jnp.zeros((1, 2)))
    obs = jax.random.normal(jax.random.key(1), (7, 3, 2))
    reset = jnp.asarray(np.random.default_rng(0).random((7, 3)) < 0.3)
    h0 = jax.random.normal(jax.random.key(2), (3, cfg.rnn_size))
    return fast, plain, params, obs, reset, h0


def test_gru_sequence_gives_the_hidden_states_of_the_scanned_cell(gru_case):
    fast, _, params, obs, reset, h0 = gru_case
    xp = fast.network.apply(params, obs, method="project")
    gates = params["params"]["hidden_gates"]
    hs = fast_paths.gru_sequence(gates["kernel"], gates["bias"], h0, xp, reset)

    def cell(h, xs):  # the family's own cell, reset to 0 at episode starts
        x, r = xs
        h = fast.network.apply(params, jnp.where(r[:, None], 0.0, h), x, method="cell")
        return h, h

    np.testing.assert_allclose(np.asarray(hs), np.asarray(jax.lax.scan(cell, h0, (xp, reset))[1]), atol=1e-5)


def test_gru_fast_and_plain_unroll_agree_in_outputs_and_gradients(gru_case):
    fast, plain, params, obs, reset, h0 = gru_case
    weights = jax.random.normal(jax.random.key(3), (7, 3))

    def loss(policy, params, h0, obs):
        logits, value = policy.unroll(params, h0, obs, reset)
        return jnp.sum(weights * value) + jnp.sum(jnp.sin(logits))

    np.testing.assert_allclose(float(loss(fast, params, h0, obs)), float(loss(plain, params, h0, obs)), rtol=1e-5)
    got = jax.grad(functools.partial(loss, fast), argnums=(0, 1, 2))(params, h0, obs)
    want = jax.grad(functools.partial(loss, plain), argnums=(0, 1, 2))(params, h0, obs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(got[0]["params"]["hidden_gates"]["kernel"]))) > 0


# --- permutation -----------------------------------------------------------------------------------


def test_permutation_is_a_uniform_permutation_like_jax_random_permutation():
    """The fast permutation is a permutation for every n (as `jax.random.permutation`, the plain
    path, is) and uniform: chi-square against the uniform law, p > 1e-3."""
    for n in (1, 2, 7, 1000, 8192):
        for fn in (fast_paths.permutation, fast_paths.plain_permutation):
            perm = np.asarray(jax.jit(fn, static_argnums=1)(jax.random.key(n), n))
            assert perm.dtype == np.int32
            np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    # n = 4 has 24 orders: 24,000 draws give ~1,000 each
    keys = jax.random.split(jax.random.key(7), 24_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: fast_paths.permutation(k, 4)))(keys))
    counts = np.unique(perms @ np.array([64, 16, 4, 1]), return_counts=True)[1]
    assert len(counts) == 24 and scipy_stats.chisquare(counts).pvalue > 1e-3
    # the first slot of a 512-permutation holds each sample equally often
    firsts = np.asarray(jax.jit(jax.vmap(lambda k: fast_paths.permutation(k, 512)[0]))(keys[:12_800]))
    assert scipy_stats.chisquare(np.bincount(firsts // 64, minlength=8)).pvalue > 1e-3


# --- categorical log-probabilities -----------------------------------------------------------------


@pytest.mark.parametrize("num_actions", [2, 3, 8, 12])  # unrolled up to 8 actions, jax.nn above
def test_log_softmax_log_prob_and_entropy_equal_the_plain_functions(num_actions):
    logits = 3.0 * jax.random.normal(jax.random.key(num_actions), (50, num_actions))
    actions = jax.random.randint(jax.random.key(1), (50,), 0, num_actions)
    x = np.asarray(logits, np.float64)
    ref = x - x.max(-1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(fast_paths.log_softmax(logits)), ref, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(fast_paths.log_softmax(logits)), np.asarray(jax.nn.log_softmax(logits)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(categorical_log_prob(logits, actions)), ref[np.arange(50), actions], atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(categorical_entropy(logits)), -(np.exp(ref) * ref).sum(-1), atol=1e-5)
    fast, plain = Categorical(num_actions, True), Categorical(num_actions, False)

    def objective(dist, z):
        return jnp.sum(dist.log_prob(z, actions)) - jnp.sum(dist.entropy(z))

    for fn in (lambda d: d.log_prob(logits, actions), lambda d: d.entropy(logits)):
        np.testing.assert_allclose(np.asarray(fn(fast)), np.asarray(fn(plain)), rtol=1e-6, atol=1e-6)
    got, want = (jax.grad(functools.partial(objective, d))(logits) for d in (fast, plain))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


# --- batching runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("runs", [1, 3])
def test_vmap_runs_equals_jax_vmap(runs):
    def step(h, s):
        return {"x": s["x"] @ s["w"] * h}, {"m": jnp.sum(s["x"]) * h}

    state = {"x": jax.random.normal(jax.random.key(0), (runs, 4, 3)), "w": jnp.ones((runs, 3, 3))}
    h = jnp.arange(1.0, runs + 1.0)
    got, want = fast_paths.vmap_runs(step)(h, state), jax.vmap(step)(h, state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


# --- a short CartPole run on each path -------------------------------------------------------------


def test_cartpole_learns_on_both_paths_alike():
    """4 seeds × 50k steps: each path lifts the return from ~25 to a late mean ≥ 200, and the
    two late means differ by < 150 (about two standard errors of the difference at this budget:
    measured 340 fast, 463 plain; the paths draw different initial kernels and minibatch orders)."""
    keys = jax.random.split(jax.random.key(0), 4)
    late = {}
    for fast in (True, False):
        cfg = ppo_jax.default_config("CartPole-v1", total_timesteps=50_000, fast_paths=fast)
        returns = np.asarray(jax.jit(jax.vmap(ppo_jax.make_train(cfg)))(keys).metrics["episode_return"])
        assert np.nanmean(returns[:, :5]) < 60.0
        tail = returns.shape[1] // 10
        late[fast] = np.mean(np.nanmean(returns[:, -tail:], axis=1))
    assert min(late.values()) >= 200.0, late
    assert abs(late[True] - late[False]) < 150.0, late
