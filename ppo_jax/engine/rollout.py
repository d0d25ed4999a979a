"""Rollout: `num_steps` of N vectorised envs as one `lax.scan` over time, with any policy family.

Data are time-major: every `Transition` field is [T, N, ...]. A recurrent policy's carry lives in
`EnvCarry.policy_carry` and is reset where an observation starts an episode (`first`).

All random draws of a rollout (env keys, action noise, auto-reset states) are made for the
run's N envs at once; on a device that holds only some envs of the run (`--shard-envs`), the
draws are sliced to its envs, so a run's random stream does not depend on the device count.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.engine.sgd import LOCAL, Collective
from ppo_jax.envs import (
    EnvSpec,
    RewardScaler,
    RunningStats,
    env_action,
    init_running_stats,
    normalize,
    scale_reward,
    update_running_stats,
)
from ppo_jax.errors import ConfigError
from ppo_jax.policies import rollout_apply


class Transition(NamedTuple):
    """One step of N envs (a rollout stacks these to [T, N, ...])."""

    obs: jax.Array  # s_t as the network saw it (normalised if enabled) [N, *obs]
    action: jax.Array  # a_t, unclipped [N] or [N, D]
    log_prob: jax.Array  # log π_old(a_t|s_t) [N]
    value: jax.Array  # V_old(s_t) [N]
    reward: jax.Array  # r_t after reward scaling (if enabled) [N]
    terminated: jax.Array  # d_t: s'_t is terminal [N] bool
    truncated: jax.Array  # the episode was cut by a time limit at t [N] bool
    final_obs: jax.Array  # s'_t, the true next state (pre-reset), normalised like obs [N, *obs]
    first: jax.Array  # s_t starts an episode (the policy carry was reset before it) [N] bool
    next_carry: Any  # the policy carry after seeing s_t (for V(s'_t)); () when feed-forward


class EnvCarry(NamedTuple):
    """Everything about the environments that persists across steps and updates."""

    env_state: Any  # suite state, batched over N
    obs: jax.Array  # raw observation of the current state [N, *obs]
    episode_return: jax.Array  # undiscounted raw return of the running episode [N]
    episode_length: jax.Array  # steps of the running episode [N] int32
    obs_stats: RunningStats  # observation normalisation statistics
    reward_scaler: RewardScaler  # reward scaling state
    policy_carry: Any  # the policy's recurrent state [N, ...]; () when feed-forward
    first: jax.Array  # obs starts an episode [N] bool


class EpisodeStats(NamedTuple):
    """Sums over the episodes that ended during a rollout (reduced in the scan carry)."""

    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array

    @staticmethod
    def zero() -> EpisodeStats:
        return EpisodeStats(jnp.float32(0), jnp.float32(0), jnp.float32(0))


class RolloutContext(NamedTuple):
    """Static pieces the rollout needs (closed over by `functools.partial`)."""

    env: Any
    env_params: Any
    spec: EnvSpec
    policy: Any  # a policy family (`ppo_jax.policies.PolicyFamily`)
    dist: Any  # the action distribution (`ppo_jax.core.distributions`)
    num_envs: int  # N, the run's envs (all devices together)
    num_steps: int
    normalize_obs: bool
    normalize_reward: bool


def reset_envs(ctx: RolloutContext, key: jax.Array) -> EnvCarry:
    """Reset N envs; zero episode counters, fresh normalisation statistics, initial policy carry."""
    obs, env_state = jax.vmap(ctx.env.reset, in_axes=(0, None))(jax.random.split(key, ctx.num_envs), ctx.env_params)
    zeros = jnp.zeros((ctx.num_envs,), jnp.float32)
    return EnvCarry(
        env_state=env_state,
        obs=obs,
        episode_return=zeros,
        episode_length=jnp.zeros((ctx.num_envs,), jnp.int32),
        obs_stats=init_running_stats(ctx.spec.obs_shape),
        reward_scaler=RewardScaler(zeros, init_running_stats(())),
        policy_carry=ctx.policy.initial_carry(ctx.num_envs),
        first=jnp.ones((ctx.num_envs,), bool),
    )


def steps_without_autoreset(env: Any) -> bool:
    """True when `env.step` is gymnax's own auto-resetting step (not overridden, e.g. by a
    wrapper), so the rollout may call `step_env` and apply pre-drawn resets itself."""
    from gymnax.environments.environment import Environment

    return isinstance(env, Environment) and type(env).step is Environment.step


def final_observation(env: Any, info: Any) -> jax.Array:
    """`info["final_observation"]`, s'_t before the auto-reset, which bootstraps V(s'_t) where an
    episode ended; `ConfigError` (at trace time) for an env whose `step` leaves it out, which
    would otherwise bootstrap from the reset observation."""
    if not isinstance(info, dict) or "final_observation" not in info:
        raise ConfigError(
            "env",
            f"{type(env).__name__}.step returns no info['final_observation'] (the observation before the "
            "auto-reset, needed to bootstrap episodes cut by a time limit); return it from step, as gymnax's "
            "Environment.step does",
        )
    return info["final_observation"]


def env_step(ctx: RolloutContext, keys: jax.Array, carry: EnvCarry, action: jax.Array, resets=None):
    """Step the N envs (one key each, [N]) with the (clipped) action and auto-reset ended
    episodes. Returns (next_obs, env_state, reward, terminated, truncated, final_obs), all
    batched over N.

    With `resets` = (reset obs, reset states) drawn in advance for these N envs, the step is
    gymnax's `step` (step_env, is_truncated, then reset where the episode ended) without its
    per-step key split and reset draw; otherwise `env.step` does both.
    """
    action = env_action(action, ctx.spec)
    if resets is None:
        step = jax.vmap(ctx.env.step, in_axes=(0, 0, 0, None))
        obs, state, reward, terminated, truncated, info = step(keys, carry.env_state, action, ctx.env_params)
        final_obs = final_observation(ctx.env, info)
    else:
        step = jax.vmap(ctx.env.step_env, in_axes=(0, 0, 0, None))
        final_obs, stepped, reward, terminated, _ = step(keys, carry.env_state, action, ctx.env_params)
        truncated = jax.vmap(ctx.env.is_truncated, in_axes=(0, None))(stepped, ctx.env_params)
        done = jnp.logical_or(terminated, truncated)
        pick = lambda r, s: jnp.where(done.reshape(done.shape + (1,) * (s.ndim - 1)), r, s)  # noqa: E731
        reset_obs, reset_state = resets
        obs, state = pick(reset_obs, final_obs), jax.tree.map(pick, reset_state, stepped)
    terminated = jnp.asarray(terminated, bool)
    return obs, state, reward.astype(jnp.float32), terminated, jnp.asarray(truncated, bool), final_obs


def rollout_step(ctx: RolloutContext, apply: Any, hparams: Any, state, xs):
    """One policy + environment step. Carry: (EnvCarry, EpisodeStats); xs: (env keys [N], action
    noise [N, A], auto-reset (obs, states) [N] drawn in advance or None). `apply(carry, obs,
    reset)` is the policy prepared for the rollout (`policies.rollout_apply`). Emits a `Transition`."""
    carry, episodes = state
    env_keys, noise, resets = xs
    obs_stats = update_running_stats(carry.obs_stats, carry.obs) if ctx.normalize_obs else carry.obs_stats
    norm = (lambda o: normalize(o, obs_stats)) if ctx.normalize_obs else (lambda o: o.astype(jnp.float32))
    obs = norm(carry.obs)
    policy_carry, dist, value = apply(carry.policy_carry, obs, carry.first)
    action, log_prob = ctx.dist.sample_with_noise(dist, noise)
    next_obs, env_state, reward, terminated, truncated, final_obs = env_step(ctx, env_keys, carry, action, resets)

    done = jnp.logical_or(terminated, truncated)
    ep_return = carry.episode_return + reward
    ep_length = carry.episode_length + 1
    episodes = EpisodeStats(
        episodes.return_sum + jnp.sum(jnp.where(done, ep_return, 0.0)),
        episodes.length_sum + jnp.sum(jnp.where(done, ep_length, 0)).astype(jnp.float32),
        episodes.count + jnp.sum(done).astype(jnp.float32),
    )
    scaler = carry.reward_scaler
    if ctx.normalize_reward:
        scaler, reward = scale_reward(scaler, reward, done, hparams.gamma)
    transition = Transition(
        obs, action, log_prob, value, reward, terminated, truncated, norm(final_obs), carry.first, policy_carry
    )
    carry = EnvCarry(
        env_state=env_state,
        obs=next_obs,
        episode_return=jnp.where(done, 0.0, ep_return),
        episode_length=jnp.where(done, 0, ep_length),
        obs_stats=obs_stats,
        reward_scaler=scaler,
        policy_carry=policy_carry,
        first=done,
    )
    return (carry, episodes), transition


def _local_envs(x: jax.Array, reduce: Collective, num_local: int) -> jax.Array:
    """The columns [T, n] of this device's n envs out of a draw [T, N, ...] for the whole run."""
    if reduce.axis is None:
        return x
    return lax.dynamic_slice_in_dim(x, reduce.index() * num_local, num_local, axis=1)


def draw_resets(ctx: RolloutContext, key: jax.Array, local: Any):
    """Reset (obs, states) [T, n] for every step of this device's envs, drawn in advance.

    An env with `reset_ratio` k > 1 (expensive resets, e.g. Craftax's world generation) draws
    ceil(N / k) per step and gives each to k neighbouring envs, as optimistic resets do: two of
    them ending at the same step start alike.
    """
    ratio = int(getattr(ctx.env, "reset_ratio", 1))
    reset = jax.vmap(jax.vmap(ctx.env.reset_env, in_axes=(0, None)), in_axes=(0, None))
    if ratio == 1:
        return reset(local(jax.random.split(key, (ctx.num_steps, ctx.num_envs))), ctx.env_params)
    out = reset(jax.random.split(key, (ctx.num_steps, -(-ctx.num_envs // ratio))), ctx.env_params)
    return jax.tree.map(lambda x: local(jnp.repeat(x, ratio, axis=1)[:, : ctx.num_envs]), out)


def rollout(ctx: RolloutContext, params: Any, hparams: Any, carry: EnvCarry, key: jax.Array, reduce=LOCAL):
    """Collect `ctx.num_steps` steps from the envs in `carry` with the current policy.

    Returns (EnvCarry after the last step, Transition [T, n, ...], EpisodeStats of the episodes
    that ended during the rollout); n = N on one device, this device's envs under `reduce`.
    """
    key_env, key_reset, key_act = jax.random.split(key, 3)
    shape = (ctx.num_steps, ctx.num_envs)
    local = functools.partial(_local_envs, reduce=reduce, num_local=carry.obs.shape[0])
    env_keys = local(jax.random.split(key_env, shape))
    noise = local(ctx.dist.noise(key_act, shape))
    resets = None
    if steps_without_autoreset(ctx.env):
        resets = draw_resets(ctx, key_reset, local)
    step = functools.partial(rollout_step, ctx, rollout_apply(ctx.policy, params), hparams)
    (carry, episodes), traj = lax.scan(step, (carry, EpisodeStats.zero()), (env_keys, noise, resets))
    return carry, traj, episodes
