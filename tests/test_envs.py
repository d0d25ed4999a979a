"""Running statistics, reward scaling and observation normalisation against NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.envs import (
    RewardScaler,
    env_action,
    env_spec,
    init_running_stats,
    make_env,
    normalize,
    scale_reward,
    update_running_stats,
)


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_running_stats_match_numpy_over_concatenated_batches(shape):
    rng = np.random.default_rng(0)
    stats = init_running_stats(shape)
    update = jax.jit(update_running_stats)
    seen = []
    for size in (1, 7, 64, 3, 200, 2):
        batch = (5.0 + 3.0 * rng.normal(size=(size, *shape))).astype(np.float32)
        seen.append(batch)
        stats = update(stats, jnp.asarray(batch))
        everything = np.concatenate(seen).astype(np.float64)
        # The 1e-4 prior count makes the first estimates differ slightly from the sample values.
        np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-4, atol=1e-3)
        if len(everything) > 1:
            np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-3, atol=1e-3)
        assert float(stats.count) == pytest.approx(len(everything), abs=1e-3)
        assert stats.mean.shape == shape and stats.var.shape == shape


def test_running_stats_are_order_independent_in_batching():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(120, 4)).astype(np.float32) * 2.0 - 1.0
    one = update_running_stats(init_running_stats((4,)), jnp.asarray(data))
    many = init_running_stats((4,))
    for chunk in np.split(data, [5, 6, 50, 99]):
        many = update_running_stats(many, jnp.asarray(chunk))
    np.testing.assert_allclose(one.mean, many.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.var, many.var, rtol=1e-4)


def test_normalize_uses_the_stats_and_clips_at_ten():
    rng = np.random.default_rng(2)
    data = (2.0 + 0.5 * rng.normal(size=(500, 2))).astype(np.float32)
    stats = update_running_stats(init_running_stats((2,)), jnp.asarray(data))
    x = np.array([[2.5, 1.0], [100.0, -100.0]], np.float32)
    got = np.asarray(normalize(jnp.asarray(x), stats))
    expected = np.clip((x - data.mean(0)) / np.sqrt(data.var(0) + 1e-8), -10.0, 10.0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert got[1, 0] == 10.0 and got[1, 1] == -10.0


def test_scale_reward_divides_by_running_std_of_discounted_return():
    """NumPy reference: ret <- gamma * ret + r; r / std(all ret so far); ret <- 0 at episode end."""
    rng = np.random.default_rng(3)
    num_steps, num_envs, gamma = 40, 4, 0.9
    rewards = rng.normal(1.0, 2.0, size=(num_steps, num_envs)).astype(np.float32)
    done = rng.random((num_steps, num_envs)) < 0.15
    scaler = RewardScaler(jnp.zeros(num_envs), init_running_stats(()))
    step = jax.jit(scale_reward)
    ret = np.zeros(num_envs)
    history = []
    for t in range(num_steps):
        scaler, scaled = step(scaler, jnp.asarray(rewards[t]), jnp.asarray(done[t]), jnp.float32(gamma))
        ret = gamma * ret + rewards[t]
        history.append(ret.copy())
        std = np.sqrt(np.var(np.concatenate(history)) + 1e-8)
        np.testing.assert_allclose(np.asarray(scaled), np.clip(rewards[t] / std, -10, 10), rtol=2e-3, atol=1e-4)
        ret = np.where(done[t], 0.0, ret)
        np.testing.assert_allclose(np.asarray(scaler.ret), ret, rtol=1e-5, atol=1e-5)
    assert np.any(done), "the data should contain episode ends"


def test_scale_reward_clips_at_ten_and_keeps_the_sign():
    # After many tiny returns the running std is small; a large reward is clipped to ±10.
    tiny = 0.01 * np.random.default_rng(4).normal(size=10_000).astype(np.float32)
    scaler = RewardScaler(jnp.zeros(2), update_running_stats(init_running_stats(()), jnp.asarray(tiny)))
    scaler, scaled = scale_reward(scaler, jnp.array([50.0, -50.0]), jnp.array([False, False]), jnp.float32(0.99))
    np.testing.assert_array_equal(np.asarray(scaled), [10.0, -10.0])
    scaler, scaled = scale_reward(scaler, jnp.array([0.1, -0.1]), jnp.array([False, False]), jnp.float32(0.99))
    assert 0.0 < float(scaled[0]) < 10.0 and float(scaled[1]) == pytest.approx(-float(scaled[0]))


@pytest.mark.parametrize("name", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_env_action_clips_box_actions_to_the_bounds(name):
    env, params = make_env(name)
    spec = env_spec(env, params)
    space = env.action_space(params)
    actions = np.array([[-5.0], [0.3], [7.0], [-0.2]], np.float32)
    got = np.asarray(env_action(jnp.asarray(actions), spec))
    expected = np.clip(actions, np.asarray(space.low), np.asarray(space.high))
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6)
    assert got.shape[0] == 4


def test_env_action_passes_discrete_actions_through():
    env, params = make_env("CartPole-v1")
    actions = jnp.array([0, 1, 1, 0], jnp.int32)
    np.testing.assert_array_equal(np.asarray(env_action(actions, env_spec(env, params))), np.asarray(actions))


@pytest.mark.parametrize("name", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"])
def test_env_step_with_drawn_resets_equals_gymnax_auto_reset_step(name):
    """The rollout's step (step_env + is_truncated + pre-drawn resets) against gymnax's own `step`,
    given the key halves gymnax would split off; episodes end (terminated or truncated) in the run."""
    from ppo_jax.config import default_config
    from ppo_jax.engine.rollout import env_step, reset_envs, steps_without_autoreset
    from ppo_jax.engine.train import make_context

    ctx = make_context(default_config(name, num_envs=3)).rollout
    assert steps_without_autoreset(ctx.env)
    spec, env, params = ctx.spec, ctx.env, ctx.env_params

    @jax.jit
    def both(carry, key):
        key_step, key_act = jax.random.split(key)
        keys = jax.random.split(key_step, ctx.num_envs)
        if spec.discrete:
            action = jax.random.randint(key_act, (ctx.num_envs,), 0, spec.action_dim)
        else:
            action = 2.0 * jax.random.normal(key_act, (ctx.num_envs, spec.action_dim))
        reference = env_step(ctx, keys, carry, action)  # env.step: split, step_env, reset, select
        halves = jax.vmap(jax.random.split)(keys)
        resets = jax.vmap(env.reset_env, in_axes=(0, None))(halves[:, 1], params)
        ours = env_step(ctx, halves[:, 0], carry, action, resets)
        return reference, ours

    carry = reset_envs(ctx, jax.random.key(0))
    ended = 0
    for t in range(260):
        reference, ours = both(carry, jax.random.key(t + 1))
        for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(ours), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        ended += int(np.sum(np.asarray(reference[3]) | np.asarray(reference[4])))
        carry = carry._replace(obs=reference[0], env_state=reference[1])
    assert ended > 0


def test_overridden_step_keeps_the_envs_own_step():
    from gymnax.environments.classic_control.cartpole import CartPole

    from ppo_jax.engine.rollout import steps_without_autoreset

    class CountingCartPole(CartPole):
        def step(self, key, state, action, params=None):
            return super().step(key, state, action, params)

    assert steps_without_autoreset(CartPole())
    assert not steps_without_autoreset(CountingCartPole())
    assert not steps_without_autoreset(object())
