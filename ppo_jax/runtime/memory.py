"""Memory planning for many runs in one program: how many runs go through it at once.

`run_memory_estimate` is an upper estimate of one run's device bytes, `device_memory_bytes`
what a device has free, and `choose_max_parallel` the batch of runs that fits in a fraction of
it; the sweep (`runtime.sweeps`) checks the estimate against the compiled program's own memory
analysis.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from ppo_jax.config import PPOConfig
from ppo_jax.engine.train import METRIC_NAMES, TrainContext
from ppo_jax.runtime.cpu import host_available_bytes


def device_memory_bytes(device: Any = None) -> int:
    """Memory free for a program on `device`: the accelerator's limit minus what is in use, or on
    the CPU the host's available memory (MemAvailable)."""
    device = device or jax.devices()[0]
    try:
        mem = device.memory_stats() or {}
    except Exception:  # backends without memory statistics
        mem = {}
    if "bytes_limit" in mem:
        return int(mem["bytes_limit"]) - int(mem.get("bytes_in_use", 0))
    return host_available_bytes()


def run_memory_estimate(config: PPOConfig, obs_size: int, action_dim: int, num_params: int) -> int:
    """Upper estimate of the device bytes one run needs inside the program (float32 words × 4).

    Counts the rollout buffer [T, N] (twice the observation: s_t and s'_t), the batch and its
    shuffled copies, the activations of one minibatch forward and backward (for any policy
    family: a few layers of width √num_params, the width of a square layer with that many
    parameters), parameters with Adam moments and gradients, and the per-update metrics; then
    doubles it for the temporaries XLA keeps alive. `run_sweep` checks the compiled program's own
    memory analysis against it.
    """
    rollout = config.batch_size * (2 * obs_size + action_dim + 8)
    batch = 3 * config.batch_size * (obs_size + action_dim + 4)
    activations = 2 * 4 * config.minibatch_size * 4 * int(num_params**0.5)
    metrics = config.num_updates * len(METRIC_NAMES)
    words = rollout + batch + activations + 5 * num_params + metrics + config.num_envs * 4 * obs_size
    return 2 * 4 * words


def parameter_count(ctx: TrainContext) -> int:
    """Number of parameters of the run's policy family (abstract init: nothing is computed)."""
    obs = jax.ShapeDtypeStruct((1, *ctx.rollout.spec.obs_shape), np.float32)
    params = jax.eval_shape(ctx.policy.init, jax.random.key(0), obs)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def choose_max_parallel(num_runs: int, run_bytes: int, memory_bytes: int, fraction: float = 0.5) -> int:
    """Runs per batch: all `num_runs` if they fit in `fraction` of `memory_bytes`, else as many as
    do, balanced so that the batches are as even as possible (at least 1)."""
    fit = max(1, int(fraction * memory_bytes) // max(run_bytes, 1))
    if fit >= num_runs:
        return num_runs
    batches = math.ceil(num_runs / fit)
    return math.ceil(num_runs / batches)
