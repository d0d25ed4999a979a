"""`ppo-jax eval RUN_DIR`: evaluate the newest checkpoint of a run folder (deterministic or
sampled actions, frozen normalisation), write eval.json, optionally render one episode. A
finished run's parameters are read from its exported policy files, which hold those of its newest
checkpoint (`runtime.policy_file.final_policies`); otherwise from the checkpoint."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from ppo_jax.commands.common import add_cache_flag, use_compile_cache
from ppo_jax.commands.progress import Waiting
from ppo_jax.errors import ConfigError


def add_eval_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval", help="evaluate the final checkpoint of a run folder")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--episodes", type=int, default=100, help="episodes per seed (default: 100)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode action")
    ev.add_argument("--seed", type=int, default=0, help="evaluation seed (default: 0)")
    ev.add_argument("--render", default=None, metavar="OUT.gif", help="also write one episode as an animation")
    ev.add_argument("--quiet", action="store_true", help="no progress while compiling and evaluating")
    add_cache_flag(ev)
    ev.set_defaults(func=cmd_eval)
    return ev


# gymnax draws these envs with gymnasium's classic-control renderer (pygame); every animation is
# written by matplotlib, a .gif through Pillow.
_GYM_RENDERED = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0")


def check_render(run_dir: Path, target: str) -> None:
    """Refuse `--render` before evaluating when a package it needs is missing: `ConfigError`
    naming the package and the extra. The env is read from the run's config.json (a folder
    without one is left to `open_run` to report)."""
    try:
        env = json.loads((run_dir / "config.json").read_text()).get("env", "")
    except (OSError, ValueError, AttributeError):
        return
    needed = ["pygame", "gymnasium"] if env in _GYM_RENDERED else []
    needed += ["PIL"] if target.lower().endswith(".gif") else []
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        names = " and ".join("pillow" if m == "PIL" else m for m in missing)
        raise ConfigError("render", f"drawing {env} needs {names}: pip install 'ppo_jax[render]' (nothing evaluated)")


def _report(run_dir: Path, meta: dict, args: argparse.Namespace, result) -> dict:
    returns = np.asarray(result.returns, np.float64)
    pooled = returns.ravel()
    half = 1.96 * pooled.std(ddof=1) / math.sqrt(pooled.size) if pooled.size > 1 else math.nan
    return {
        "run_dir": str(run_dir),
        "update": meta["update"],
        "episodes_per_seed": args.episodes,
        "policy": "stochastic" if args.stochastic else "deterministic (mode)",
        "return_mean": float(pooled.mean()),
        "return_std": float(pooled.std()),
        "ci95_low": float(pooled.mean() - half),
        "ci95_high": float(pooled.mean() + half),
        "return_mean_per_seed": returns.mean(axis=1).tolist(),
        "length_mean": float(np.asarray(result.lengths).mean()),
        "eval_seed": args.seed,
    }


def cmd_eval(args: argparse.Namespace) -> int:
    import functools

    import jax

    from ppo_jax.engine.evaluate import Acting, evaluate, max_episode_steps
    from ppo_jax.engine.train import make_context
    from ppo_jax.runtime import files
    from ppo_jax.runtime.checkpoint import config_from_meta, open_run
    from ppo_jax.runtime.policy_file import final_policies

    use_compile_cache(args)
    if args.episodes < 1:
        raise ConfigError("episodes", f"must be a positive integer, got {args.episodes}")
    if not -(2**31) <= args.seed < 2**31:
        raise ConfigError("seed", f"must fit in 32 bits (-2147483648 .. 2147483647), got {args.seed}")
    run_dir = Path(args.run_dir)
    if args.render:
        check_render(run_dir, args.render)
    with open_run(run_dir) as store:  # refuses what is not a run folder with a checkpoint
        final = final_policies(run_dir)  # a finished run's exported policies: no orbax, no trace of the state
        if final is not None:
            config, meta = final.config, {"update": final.update, "seeds": final.seeds}
            ctx, params, stats = make_context(config), final.params, final.obs_stats
        else:
            config = config_from_meta(store.read_meta())
            ctx = make_context(config)
            saved, meta = store.restore(ctx)
            params, stats = saved.state.params, saved.state.env.obs_stats if config.normalize_obs else None
    roll = ctx.rollout
    acting = Acting(ctx.policy, ctx.dist, roll.spec)
    max_steps = max_episode_steps(roll.env_params)
    one = functools.partial(
        _evaluate_one, evaluate, roll.env, roll.env_params, acting, args.episodes, max_steps, args.stochastic
    )
    program = functools.partial(_evaluate_seeds, jax.vmap(one, in_axes=(0, None if stats is None else 0, 0)))
    waiting = None if args.quiet else Waiting(f"evaluating {len(meta['seeds'])} x {args.episodes} episodes (compiling)")
    try:
        result = jax.block_until_ready(jax.jit(program)(params, stats, np.int32(args.seed)))
    finally:
        if waiting is not None:
            waiting.stop()
    report = _report(run_dir, meta, args, result)
    files.write_json(run_dir / "eval.json", report)
    episodes = len(meta["seeds"]) * args.episodes
    print(
        f"{config.env} @ update {meta['update']}: return {report['return_mean']:.2f} ± {report['return_std']:.2f} "
        f"(95% CI {report['ci95_low']:.2f} .. {report['ci95_high']:.2f}) over {episodes} episodes, "
        f"{report['policy']} policy -> {run_dir / 'eval.json'}"
    )
    if args.render:
        _render(ctx, acting, params, stats, args, max_steps)
    return 0


def _evaluate_seeds(evaluate_all, params, obs_stats, seed):
    """Every run's evaluation in one program, with its key `split(key(seed), S)[s]` made inside
    (no eager dispatch before it)."""
    import jax

    keys = jax.random.split(jax.random.key(seed), jax.tree.leaves(params)[0].shape[0])
    return evaluate_all(params, obs_stats, keys)


def _evaluate_one(evaluate, env, env_params, acting, episodes, max_steps, stochastic, params, obs_stats, key):
    return evaluate(env, env_params, acting, params, obs_stats, key, episodes, max_steps, stochastic)


def _render(ctx, acting, params, stats, args: argparse.Namespace, max_steps: int) -> None:
    """Play one episode of the first seed on the host and save it with gymnax's visualizer."""
    import jax
    import jax.numpy as jnp

    from ppo_jax.engine.evaluate import policy_action

    roll = ctx.rollout
    params = jax.tree.map(lambda x: x[0], params)
    stats0 = None if stats is None else jax.tree.map(lambda x: x[0], stats)
    act = jax.jit(lambda c, o, r, k: policy_action(acting, params, stats0, c, o[None], r, k, args.stochastic))
    step = jax.jit(roll.env.step)
    key = jax.random.key(args.seed)
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

        Visualizer(roll.env, roll.env_params, states, np.cumsum(rewards)).animate(args.render)
    except Exception as err:  # rendering depends on optional packages (pygame, pillow)
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        hint = " (install it with: pip install 'ppo_jax[render]')" if isinstance(cause, ImportError) else ""
        raise OSError(f"cannot render {ctx.config.env} to {args.render}: {cause}{hint}") from err
    print(f"wrote {len(states)} frames to {args.render}")
