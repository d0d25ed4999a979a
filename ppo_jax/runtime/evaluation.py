"""`ppo-jax eval`'s plan: restore a run folder's policies and evaluate every seed in one program.

Every folder the executor writes can be evaluated: a training run (from its exported policy
files when they hold its newest checkpoint, else from that checkpoint) and each run folder of a
sweep (`runs/<configuration>/seed<N>`, from its exported policy file). The program takes the
policies as the policy files name their arrays (`flat_inputs`), so that `runtime.eval_program`
can keep it and run it again on those files alone; the command's record is `eval.json` in the
folder (`eval_program.write_eval`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ppo_jax.config import ConfigError, PPOConfig
from ppo_jax.engine.evaluate import Acting, evaluate, max_episode_steps, policy_action
from ppo_jax.engine.train import TrainContext, make_context
from ppo_jax.envs import RunningStats
from ppo_jax.runtime import compile_cache, files
from ppo_jax.runtime.checkpoint import config_from_meta, open_run
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.eval_program import (
    EvalProgram,
    Evaluated,
    holds,
    keep,
    kept_executable,
    program_key,
    run_program,
    store_folder,
)
from ppo_jax.runtime.policy_file import final_policies


class Restored(NamedTuple):
    """What an evaluation needs of a run folder: leaves of `params` and `obs_stats` are [S, ...]."""

    config: PPOConfig
    ctx: TrainContext
    seeds: list[int]
    update: int
    params: Any
    obs_stats: Any  # None without observation normalisation


# Folders that hold run folders, not a run: where those run folders are.
RUN_FOLDERS = {"sweep": "runs/*/seed*", "compare": "arms/*"}


def restore_policies(run_dir: str | os.PathLike) -> Restored:
    """The run's policies from its exported files (no orbax, no trace of the training state), or
    from its newest checkpoint; `ConfigError`/`CheckpointError` naming what the folder is instead."""
    run_dir = Path(run_dir)
    found = files.folder_kind(run_dir)
    if found is not None and found[0] in RUN_FOLDERS:
        runs = sorted(run_dir.glob(RUN_FOLDERS[found[0]]))
        example = f": ppo-jax eval {runs[0]}" if runs else " once it has finished"
        held = f"{run_dir} holds {files.FOLDER_KINDS[found[0]][0]} (ppo-jax {found[0]}: {found[1]}), not a training run"
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


def flat_inputs(params, obs_stats) -> dict[str, Any]:
    """The evaluation program's inputs (`eval_program.EvalProgram`) from parameters and statistics
    with leaves [S, ...]: `params/<path>` as the policy files name them, `obs_mean`, `obs_var`."""
    flat = {f"params/{k}": v for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    if obs_stats is not None:
        flat.update(obs_mean=obs_stats.mean, obs_var=obs_stats.var)
    return flat


def _evaluate_seeds(evaluate_all, inputs, seed):
    """Every run's evaluation in one program, with its key `split(key(seed), S)[s]` made inside
    (no eager dispatch before it). The statistics' count is not read by an evaluation."""
    names = {k[len("params/") :]: v for k, v in inputs.items() if k.startswith("params/")}
    params = traverse_util.unflatten_dict(names, sep="/")
    count = jax.tree.leaves(params)[0].shape[0]
    stats = None
    if "obs_mean" in inputs:
        stats = RunningStats(inputs["obs_mean"], inputs["obs_var"], jnp.ones((count,), jnp.float32))
    result = evaluate_all(params, stats, jax.random.split(jax.random.key(seed), count))
    return result.returns, result.lengths, result.unfinished


def _program(restored: Restored, episodes: int, stochastic: bool):
    """(the evaluation of every seed as one function of (inputs, seed), its inputs as host arrays)."""
    roll = restored.ctx.rollout
    acting = Acting(restored.ctx.policy, restored.ctx.dist, roll.spec)
    max_steps = max_episode_steps(roll.env_params)
    one = functools.partial(_evaluate_one, roll.env, roll.env_params, acting, episodes, max_steps, stochastic)
    stats_axis = None if restored.obs_stats is None else 0
    program = functools.partial(_evaluate_seeds, jax.vmap(one, in_axes=(0, stats_axis, 0)))
    # host arrays: the program is lowered and kept for one placement, whether the policies came
    # from policy files or from a checkpoint laid out over several devices
    return program, jax.tree.map(np.asarray, flat_inputs(restored.params, restored.obs_stats))


def _kept_key(run_dir: str | os.PathLike, episodes: int, stochastic: bool) -> str | None:
    """`eval_program.program_key` of the run folder's evaluation, or None without its config.json."""
    try:
        return program_key((Path(run_dir) / "config.json").read_bytes(), episodes, stochastic)
    except OSError:
        return None


def _digest(lowered, options: dict | None) -> str:
    """sha256 of the program's lowered text and the compiler options: what its executable is kept under."""
    return hashlib.sha256((lowered.as_text() + repr(sorted((options or {}).items()))).encode()).hexdigest()


def compile_evaluation(
    restored: Restored,
    episodes: int,
    stochastic: bool,
    keep_for: str | os.PathLike | None = None,
    afresh: bool = False,
) -> EvalProgram:
    """`engine.evaluate.evaluate` of every seed's policy, vmapped over seeds in one jitted
    program, compiled (or loaded from JAX's persistent cache) for the restored run with the
    compiler options of its `fast_paths` switch. With `keep_for` (the run folder), the program is
    also kept for the next evaluation of its final policies with the same episodes and action
    mode (`eval_program.keep`). `afresh`: compiled in this process, bypassing both stores (what
    `ppo-jax eval` falls back to when a stored executable refuses this process's device layout)."""
    config = restored.config
    program, inputs = _program(restored, episodes, stochastic)
    options = compiler_options(config.fast_paths)
    if afresh:  # neither a kept executable nor JAX's cache: compiled here, for this process
        compiled = compile_cache.compile_afresh(lambda: jax.jit(program).lower(inputs, np.int32(0)), options)
        return EvalProgram(config.env, restored.seeds, restored.update, compiled, inputs)
    lowered = jax.jit(program).lower(inputs, np.int32(0))
    if keep_for is None:
        compiled = lowered.compile(compiler_options=options)
        return EvalProgram(config.env, restored.seeds, restored.update, compiled, inputs)
    digest = _digest(lowered, options)
    compiled, fresh = kept_executable(digest, inputs), False
    if compiled is None:
        compiled, fresh = compile_cache.compile_here(lowered, options)
        if not fresh:  # loaded from JAX's cache: compiled again to be kept
            again = functools.partial(program)  # a new function: not the lowering JAX holds for `program`
            compiled = compile_cache.compile_afresh(lambda: jax.jit(again).lower(inputs, np.int32(0)), options)
            fresh = True
    evaluation = EvalProgram(config.env, restored.seeds, restored.update, compiled, inputs)
    key = _kept_key(keep_for, episodes, stochastic)
    if key is not None:
        keep(key, evaluation._replace(update=config.num_updates), config.normalize_obs, digest, fresh)
    return evaluation


def keep_ahead(restored: Restored, run_dir: str | os.PathLike, episodes: int, stochastic: bool) -> bool:
    """Keep the evaluation `ppo-jax eval RUN_DIR` will run once the run has finished, before it
    has (`restored`: the run's config and seeds, parameters of the final ones' shapes). True when
    it is kept: found kept already for this run (nothing traced), or lowered and then compiled
    unless its executable is kept under another run's key. Nothing is kept when the cache is off
    or JAX loaded the program from its own cache (an executable it loads does not serialise
    whole, and compiling it again with that cache off would turn the cache off for every thread
    of the process meanwhile)."""
    key = _kept_key(run_dir, episodes, stochastic)
    if key is None or store_folder() is None:
        return False
    config = restored.config
    program, inputs = _program(restored, episodes, stochastic)
    evaluation = EvalProgram(config.env, restored.seeds, config.num_updates, None, inputs)
    if holds(key, evaluation, config.normalize_obs):  # a repeat of the same run
        return True
    lowered, options = jax.jit(program).lower(inputs, np.int32(0)), compiler_options(config.fast_paths)
    digest = _digest(lowered, options)
    if keep(key, evaluation, config.normalize_obs, digest, fresh=False):  # its executable is kept already
        return True
    compiled, fresh = compile_cache.compile_here(lowered, options)
    return fresh and keep(key, evaluation._replace(compiled=compiled), config.normalize_obs, digest, fresh)


def evaluate_policies(restored: Restored, episodes: int, stochastic: bool, seed: int) -> Evaluated:
    """Returns and lengths [S, episodes] of every seed's policy (`compile_evaluation`)."""
    return run_program(compile_evaluation(restored, episodes, stochastic), seed)


def render_episode(restored: Restored, target: str, seed: int, stochastic: bool) -> int:
    """Play one episode of the first seed on the host and save it to `target` with gymnax's
    visualizer; returns the frames written. `OSError` naming a missing optional package."""
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
