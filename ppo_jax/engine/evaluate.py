"""Evaluation of a trained policy: pure and jittable.

`evaluate` plays `num_episodes` episodes in parallel with frozen observation-normalisation
statistics and returns each episode's undiscounted return; a recurrent policy carries its state
through the episode. `policy_action` is one acting step, shared with exported policies.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.engine.rollout import steps_without_autoreset
from ppo_jax.envs import EnvSpec, RunningStats, env_action, normalize


class Acting(NamedTuple):
    """The static parts of acting: a policy family, its action distribution and the env's spaces."""

    policy: Any
    dist: Any
    spec: EnvSpec


class EvalResult(NamedTuple):
    """Per-episode returns and lengths [E], and whether the episode was still running after
    `max_steps` steps (its return then covers only those steps)."""

    returns: jax.Array
    lengths: jax.Array
    unfinished: jax.Array


def policy_action(acting: Acting, params, obs_stats: RunningStats | None, carry, obs, reset, key, stochastic: bool):
    """One acting step for raw `obs` [N, *obs_shape]: normalise, forward (resetting the carry where
    `reset` [N]), take the mode (or a sample), clip for the env. Returns (env action, carry)."""
    x = obs.astype(jnp.float32) if obs_stats is None else normalize(obs, obs_stats)
    carry, dist, _ = acting.policy.apply(params, carry, x, reset)
    action = acting.dist.sample(key, dist)[0] if stochastic else acting.dist.mode(dist)
    return env_action(action, acting.spec), carry


def evaluate(
    env: Any,
    env_params: Any,
    acting: Acting,
    params: Any,
    obs_stats: RunningStats | None,
    key: jax.Array,
    num_episodes: int,
    max_steps: int,
    stochastic: bool = False,
) -> EvalResult:
    """Play `num_episodes` episodes (one per parallel env) for at most `max_steps` steps each.

    Only the first episode of each env counts; the return is the sum of raw rewards until it
    ends (terminated or truncated). The loop stops once every episode has ended (step t uses key
    `split(key_run, max_steps)[t]`, so the returns are those of running all `max_steps`).
    Static: env, acting, num_episodes, max_steps, stochastic.
    """
    key_reset, key_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, num_episodes), env_params)
    step = jax.vmap(step_without_reset(env), in_axes=(0, 0, 0, None))

    keys = jax.random.split(key_run, max_steps)

    def unfinished(loop):
        t, *_, running = loop
        return (t < max_steps) & jnp.any(running)

    def play_step(loop):
        t, obs, state, policy_carry, first, ret, length, running = loop
        key_a, key_s = jax.random.split(keys[t])
        action, policy_carry = policy_action(acting, params, obs_stats, policy_carry, obs, first, key_a, stochastic)
        obs, state, reward, terminated, truncated, _ = step(
            jax.random.split(key_s, num_episodes), state, action, env_params
        )
        ret = ret + jnp.where(running, reward, 0.0)
        length = length + running.astype(jnp.int32)
        done = jnp.asarray(terminated, bool) | jnp.asarray(truncated, bool)
        return t + 1, obs, state, policy_carry, done, ret, length, running & ~done

    init = (
        jnp.int32(0),
        obs,
        state,
        acting.policy.initial_carry(num_episodes),
        jnp.ones(num_episodes, bool),
        jnp.zeros(num_episodes, jnp.float32),
        jnp.zeros(num_episodes, jnp.int32),
        jnp.ones(num_episodes, bool),
    )
    *_, returns, lengths, running = lax.while_loop(unfinished, play_step, init)
    return EvalResult(returns, lengths, running)


def step_without_reset(env: Any):
    """`env.step` without its auto-reset where that step is gymnax's own (`step_env` with gymnax's
    key split and `is_truncated`, so an episode's steps are the same): an evaluation never plays a
    second episode, and a reset may cost far more than a step (Craftax's world generation costs
    about 40). An env with a step of its own keeps it."""
    if not steps_without_autoreset(env):
        return env.step

    def step(key, state, action, params):
        key_step, _ = jax.random.split(key)
        obs, state, reward, terminated, info = env.step_env(key_step, state, action, params)
        return obs, state, reward, terminated, env.is_truncated(state, params), info

    return step


def max_episode_steps(env_params: Any, default: int = 1000) -> int:
    """The env's time limit when it has one (gymnax `max_steps_in_episode`), else `default`."""
    return int(getattr(env_params, "max_steps_in_episode", default))
