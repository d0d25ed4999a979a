"""`evaluate` against episodes played one at a time with gymnax's own CartPole and the network's
argmax, in a plain Python loop: the same returns and lengths, whether the episodes end before
`max_steps` (the loop stops early) or are cut off by it (and reported as unfinished)."""

from __future__ import annotations

import collections
import functools

import gymnax
import jax
import numpy as np
import pytest
from gymnax.environments.classic_control import CartPole

import ppo_jax
from ppo_jax.engine.evaluate import Acting, evaluate
from ppo_jax.engine.train import make_context


class CountedCartPole(CartPole):
    """gymnax's CartPole, counting the calls of `step_env` and `reset_env` that `evaluate` makes
    (one call per step or reset of all its envs at once)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def step_env(self, key, state, action, params):
        jax.debug.callback(functools.partial(self.calls.update, ["step"]))
        return super().step_env(key, state, action, params)

    def reset_env(self, key, params):
        jax.debug.callback(functools.partial(self.calls.update, ["reset"]))
        return super().reset_env(key, params)


def reference_episodes(env, env_params, network, params, keys, max_steps):
    """Episodes of the deterministic policy stepped by hand, one gymnax env per key, side by side
    (the network sees all observations as one batch): (returns, lengths, still running at the end)."""
    step = jax.jit(env.step)
    episodes = [env.reset(k, env_params) for k in keys]
    obs, states = [o for o, _ in episodes], [s for _, s in episodes]
    totals, lengths, running = [0.0] * len(keys), [0] * len(keys), [True] * len(keys)
    for t in range(max_steps):
        actions = np.asarray(network.apply(params, np.stack(obs)).dist).argmax(-1)
        for i in range(len(keys)):
            if not running[i]:
                continue
            obs[i], states[i], reward, terminated, truncated, _ = step(
                jax.random.key(t), states[i], int(actions[i]), env_params
            )
            totals[i], lengths[i] = totals[i] + float(reward), lengths[i] + 1
            running[i] = not (bool(terminated) or bool(truncated))
        if not any(running):
            break
    return totals, lengths, running


@pytest.mark.parametrize("max_steps", [500, 50])
def test_evaluate_matches_episodes_stepped_by_hand(max_steps):
    # without fast paths the policy's logits are `network.apply`'s (the fused heads round
    # differently, and one flipped near-tie action makes a different CartPole episode)
    config = ppo_jax.default_config(
        "CartPole-v1", num_envs=2, num_steps=8, num_minibatches=1, normalize_obs=False, fast_paths=False
    )
    ctx = make_context(config)
    params = ctx.policy.init(jax.random.key(6), jax.numpy.zeros((1, 4)))
    acting = Acting(ctx.policy, ctx.dist, ctx.rollout.spec)
    key = jax.random.key(11)
    counted = CountedCartPole()
    got = evaluate(counted, ctx.rollout.env_params, acting, params, None, key, 6, max_steps)
    jax.effects_barrier()

    env, env_params = gymnax.make("CartPole-v1")
    key_reset, _ = jax.random.split(key)
    keys = jax.random.split(key_reset, 6)
    returns, lengths, running = reference_episodes(env, env_params, ctx.policy.network, params, keys, max_steps)
    np.testing.assert_allclose(np.asarray(got.returns), returns)
    np.testing.assert_array_equal(np.asarray(got.lengths), lengths)
    np.testing.assert_array_equal(np.asarray(got.unfinished), running)
    lengths = np.array(lengths)
    # no step after the last episode has ended, and no reset after the first (an ended episode
    # is not continued)
    assert counted.calls == {"step": lengths.max(), "reset": 1}
    # at 500 every episode ends by itself (the loop stops early); at 50 some are cut off, some not
    assert (
        (lengths < max_steps).all()
        if max_steps == 500
        else (lengths == max_steps).any() and (lengths < max_steps).any()
    )
    assert not any(running) if max_steps == 500 else any(running)
