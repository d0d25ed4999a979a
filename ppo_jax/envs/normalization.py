"""Running observation normalisation and reward scaling, as pure functions over named state."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NORM_CLIP = 10.0


class RunningStats(NamedTuple):
    """Running mean and variance (parallel Welford / Chan et al.) over a leading batch axis."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_running_stats(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))


def update_running_stats(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merge a batch [B, *shape] into the stats (Chan et al. 1979 parallel update)."""
    b_mean = jnp.mean(batch, axis=0)
    b_var = jnp.var(batch, axis=0)
    b_count = jnp.float32(batch.shape[0])
    delta = b_mean - stats.mean
    total = stats.count + b_count
    mean = stats.mean + delta * (b_count / total)
    m2 = stats.var * stats.count + b_var * b_count + jnp.square(delta) * (stats.count * b_count / total)
    return RunningStats(mean, m2 / total, total)


def normalize(x: jax.Array, stats: RunningStats) -> jax.Array:
    """clip((x − μ) / √(σ² + 1e-8), ±10); x [..., *shape] with the stats' trailing `shape`."""
    mean = jnp.broadcast_to(stats.mean, x.shape)
    std = jnp.broadcast_to(jnp.sqrt(stats.var + 1e-8), x.shape)
    return jnp.clip((x - mean) / std, -NORM_CLIP, NORM_CLIP)


class RewardScaler(NamedTuple):
    """State of reward scaling by the running std of the discounted return (per env `ret`)."""

    ret: jax.Array  # [N] discounted return accumulated since each env's episode start
    stats: RunningStats  # running variance of `ret`


def scale_reward(
    scaler: RewardScaler, reward: jax.Array, done: jax.Array, gamma: jax.Array
) -> tuple[RewardScaler, jax.Array]:
    """ret ← γ·ret + r; r̃ = clip(r / √(Var[ret] + 1e-8), ±10); ret ← 0 where the episode ended.

    Shapes: reward, done [N]. Returns (new scaler, scaled reward [N]).
    """
    ret = scaler.ret * gamma + reward
    stats = update_running_stats(scaler.stats, ret)
    scaled = jnp.clip(reward / jnp.sqrt(stats.var + 1e-8), -NORM_CLIP, NORM_CLIP)
    return RewardScaler(jnp.where(done, 0.0, ret), stats), scaled
