"""`ppo-jax eval RUN_DIR`: evaluate the newest policies of a run folder (deterministic or
sampled actions, frozen normalisation), write eval.json, optionally render one episode. The
compiled evaluation is `runtime.eval_program`'s (kept whole for a repeat) or, built from the run
folder, `runtime.evaluation`'s; eval.json is `runtime.eval_program`'s; this module parses, prints
and renders."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
from pathlib import Path

from ppo_jax.commands.common import add_cache_flag, use_compile_cache
from ppo_jax.commands.progress import Waiting
from ppo_jax.errors import ConfigError
from ppo_jax.runtime.eval_program import DEFAULT_EPISODES


def add_eval_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval", help="evaluate the final checkpoint of a run folder")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument(
        "--episodes", type=int, default=DEFAULT_EPISODES, help=f"episodes per seed (default: {DEFAULT_EPISODES})"
    )
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


def cmd_eval(args: argparse.Namespace) -> int:
    from ppo_jax.runtime.eval_program import eval_report, load_program, run_kept, run_program, write_eval

    use_compile_cache(args)
    if args.episodes < 1:
        raise ConfigError("episodes", f"must be a positive integer, got {args.episodes}")
    if not -(2**31) <= args.seed < 2**31:
        raise ConfigError("seed", f"must fit in 32 bits (-2147483648 .. 2147483647), got {args.seed}")
    run_dir = Path(args.run_dir)
    if args.render:
        check_render(run_dir, args.render)
    keep = not args.no_compile_cache  # the program is kept beside JAX's cache, for a repeat
    program = load_program(run_dir, args.episodes, args.stochastic) if keep and not args.render else None
    result = None
    if program is not None:  # the program kept by an earlier evaluation: no import of its parts, no trace
        with _waiting(args, len(program.seeds), args.episodes):
            result = run_kept(program, args.seed)
    if result is None:  # built from the run folder: imports, traces and compiles (or loads) it
        from ppo_jax.runtime import evaluation

        restored = evaluation.restore_policies(run_dir)
        with _waiting(args, len(restored.seeds), args.episodes, " (compiling)"):
            program = evaluation.compile_evaluation(
                restored, args.episodes, args.stochastic, keep_for=run_dir if keep else None
            )
            result = run_kept(program, args.seed)
            if result is None:  # a stored executable built for another device layout
                program = evaluation.compile_evaluation(restored, args.episodes, args.stochastic, afresh=True)
                result = run_program(program, args.seed)
    report = eval_report(run_dir, program.update, args.episodes, args.stochastic, args.seed, result)
    path = write_eval(run_dir, report)
    print(
        f"{program.env} @ update {program.update}: return {report['return_mean']:.2f} ± "
        f"{report['return_std']:.2f} (95% CI {report['ci95_low']:.2f} .. {report['ci95_high']:.2f}) over "
        f"{len(program.seeds) * args.episodes} episodes, {report['policy']} policy -> {path}"
    )
    if report["episodes_unfinished"]:
        limit = int(result.lengths.max())
        print(
            f"note: {report['episodes_unfinished']} episodes had not ended after {limit} steps (the evaluation's "
            "step limit, the env's max_steps_in_episode); their returns count only those steps"
        )
    if args.render:
        frames = evaluation.render_episode(restored, args.render, args.seed, args.stochastic)
        print(f"wrote {frames} frames to {args.render}")
    return 0


@contextlib.contextmanager
def _waiting(args: argparse.Namespace, runs: int, episodes: int, compiling: str = ""):
    """The progress line while evaluating (none with --quiet)."""
    waiting = None if args.quiet else Waiting(f"evaluating {runs} x {episodes} episodes{compiling}")
    try:
        yield
    finally:
        if waiting is not None:
            waiting.stop()
