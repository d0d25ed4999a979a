"""`ppo-jax eval`'s plan: restore a run folder's policies and evaluate every seed in one program.

Every folder the executor writes can be evaluated: a training run (from its exported policy
files when they hold its newest checkpoint, else from that checkpoint) and each run folder of a
sweep (`runs/<configuration>/seed<N>`, from its exported policy file). The command's record is
`eval.json` in the folder (`write_eval`).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax.config import ConfigError, PPOConfig
from ppo_jax.engine.evaluate import Acting, evaluate, max_episode_steps, policy_action
from ppo_jax.engine.train import TrainContext, make_context
from ppo_jax.runtime import files
from ppo_jax.runtime.checkpoint import config_from_meta, open_run
from ppo_jax.runtime.policy_file import final_policies


class Restored(NamedTuple):
    """What an evaluation needs of a run folder: leaves of `params` and `obs_stats` are [S, ...]."""

    config: PPOConfig
    ctx: TrainContext
    seeds: list[int]
    update: int
    params: Any
    obs_stats: Any  # None without observation normalisation


def restore_policies(run_dir: str | os.PathLike) -> Restored:
    """The run's policies from its exported files (no orbax, no trace of the training state), or
    from its newest checkpoint; `ConfigError`/`CheckpointError` naming what the folder is instead."""
    run_dir = Path(run_dir)
    found = files.folder_kind(run_dir)
    if found is not None and found[0] == "sweep":
        runs = sorted(run_dir.glob("runs/*/seed*"))
        example = f": ppo-jax eval {runs[0]}" if runs else " once it has finished"
        held = f"{run_dir} holds a sweep (ppo-jax sweep: {found[1]}), not a training run"
        raise ConfigError("run_dir", f"{held}; evaluate one of its run folders{example}")
    final = final_policies(run_dir)
    if final is not None:
        ctx = make_context(final.config)
        return Restored(final.config, ctx, final.seeds, final.update, final.params, final.obs_stats)
    with open_run(run_dir) as store:  # refuses what is not a run folder with a checkpoint
        config = config_from_meta(store.read_meta())
        ctx = make_context(config)
        saved, meta = store.restore(ctx)
    stats = saved.state.env.obs_stats if config.normalize_obs else None
    return Restored(config, ctx, list(meta["seeds"]), meta["update"], saved.state.params, stats)


def _evaluate_one(env, env_params, acting, episodes, max_steps, stochastic, params, obs_stats, key):
    return evaluate(env, env_params, acting, params, obs_stats, key, episodes, max_steps, stochastic)


def _evaluate_seeds(evaluate_all, params, obs_stats, seed):
    """Every run's evaluation in one program, with its key `split(key(seed), S)[s]` made inside
    (no eager dispatch before it)."""
    keys = jax.random.split(jax.random.key(seed), jax.tree.leaves(params)[0].shape[0])
    return evaluate_all(params, obs_stats, keys)


def evaluate_policies(restored: Restored, episodes: int, stochastic: bool, seed: int):
    """`engine.evaluate.evaluate` of every seed's policy, vmapped over seeds in one jitted program:
    returns [S, episodes] and lengths [S, episodes]."""
    roll = restored.ctx.rollout
    acting = Acting(restored.ctx.policy, restored.ctx.dist, roll.spec)
    max_steps = max_episode_steps(roll.env_params)
    one = functools.partial(_evaluate_one, roll.env, roll.env_params, acting, episodes, max_steps, stochastic)
    stats_axis = None if restored.obs_stats is None else 0
    program = functools.partial(_evaluate_seeds, jax.vmap(one, in_axes=(0, stats_axis, 0)))
    return jax.block_until_ready(jax.jit(program)(restored.params, restored.obs_stats, np.int32(seed)))


def eval_report(run_dir: Path, update: int, episodes: int, stochastic: bool, seed: int, result) -> dict:
    """eval.json: the pooled return over every seed's episodes with a normal 95% interval."""
    returns = np.asarray(result.returns, np.float64)
    pooled = returns.ravel()
    half = 1.96 * pooled.std(ddof=1) / math.sqrt(pooled.size) if pooled.size > 1 else math.nan
    return {
        "run_dir": str(run_dir),
        "update": update,
        "episodes_per_seed": episodes,
        "policy": "stochastic" if stochastic else "deterministic (mode)",
        "return_mean": float(pooled.mean()),
        "return_std": float(pooled.std()),
        "ci95_low": float(pooled.mean() - half),
        "ci95_high": float(pooled.mean() + half),
        "return_mean_per_seed": returns.mean(axis=1).tolist(),
        "length_mean": float(np.asarray(result.lengths).mean()),
        "eval_seed": seed,
    }


def write_eval(run_dir: Path, report: dict) -> Path:
    path = run_dir / "eval.json"
    files.write_json(path, report)
    return path


def render_episode(restored: Restored, target: str, seed: int, stochastic: bool) -> int:
    """Play one episode of the first seed on the host and save it to `target` with gymnax's
    visualizer; returns the frames written. `OSError` naming a missing optional package."""
    import jax.numpy as jnp

    ctx, roll = restored.ctx, restored.ctx.rollout
    acting = Acting(ctx.policy, ctx.dist, roll.spec)
    max_steps = max_episode_steps(roll.env_params)
    params = jax.tree.map(lambda x: x[0], restored.params)
    stats0 = None if restored.obs_stats is None else jax.tree.map(lambda x: x[0], restored.obs_stats)
    act = jax.jit(lambda c, o, r, k: policy_action(acting, params, stats0, c, o[None], r, k, stochastic))
    step = jax.jit(roll.env.step)
    key = jax.random.key(seed)
    obs, env_state = roll.env.reset(key, roll.env_params)
    carry, reset = acting.policy.initial_carry(1), jnp.ones((1,), bool)
    states, rewards = [env_state], []
    for _ in range(max_steps):
        key, k_act, k_env = jax.random.split(key, 3)
        action, carry = act(carry, obs, reset, k_act)
        reset = jnp.zeros((1,), bool)
        obs, env_state, reward, terminated, truncated, _ = step(k_env, env_state, action[0], roll.env_params)
        rewards.append(float(reward))
        if bool(terminated) or bool(truncated):
            break
        states.append(env_state)
    try:
        from gymnax.visualize import Visualizer

        Visualizer(roll.env, roll.env_params, states, np.cumsum(rewards)).animate(target)
    except Exception as err:  # rendering depends on optional packages (pygame, pillow)
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        hint = " (install it with: pip install 'ppo_jax[render]')" if isinstance(cause, ImportError) else ""
        raise OSError(f"cannot render {ctx.config.env} to {target}: {cause}{hint}") from err
    return len(states)
