"""`ppo-jax train`: parse the flags, call the run driver (`ppo_jax.runtime.driver`), print."""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any

from ppo_jax.commands.common import (
    add_cache_flag,
    add_config_flags,
    add_distributed_flags,
    add_logging_flags,
    config_from_args,
    loggers_from_args,
    refuse_flags_with_resume,
    requested_seeds,
    use_compile_cache,
)
from ppo_jax.errors import ConfigError


def add_train_parser(sub, help_env: str = "CartPole-v1") -> argparse.ArgumentParser:
    train = sub.add_parser(
        "train",
        help="train PPO on an environment (CartPole-v1 by default)",
        description="Train PPO; every config field is a flag. Writes config.json, metrics.csv, "
        "summary.json, curve.png, checkpoints/ and policy-seed<S>.npz to the run folder.",
    )
    add_config_flags(train, help_env)
    train.add_argument("--seeds", type=int, default=1, help="number of seeds trained together with jax.vmap")
    train.add_argument("--out", default=None, help="run folder (default: runs/<env>-<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no live progress line")
    train.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="N", help="save a checkpoint every N updates"
    )
    train.add_argument("--keep", type=int, default=None, metavar="K", help="keep only the newest K checkpoints")
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly (from update 0 if it stopped before its first checkpoint)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run files in --out (an earlier run there is deleted)"
    )
    train.add_argument(
        "--shard-envs",
        action="store_true",
        help="one run with its num_envs environments split over all devices (of all processes), gradients averaged",
    )
    add_cache_flag(train)
    add_logging_flags(train)
    add_distributed_flags(train)
    train.set_defaults(func=cmd_train)
    return train


def _refuse_flags_with_resume(args: argparse.Namespace) -> None:
    own = (["--seeds"] if args.seeds != 1 else []) + (["--shard-envs"] if args.shard_envs else [])
    refuse_flags_with_resume(args, "a resumed run keeps its config, seeds and folder", own)


def notify(kind: str, message: str) -> None:
    """The driver's messages: the run's start on stdout, stop requests on stderr; "running" (the
    program is ready) is the progress line's, shown only with progress on."""
    if kind == "running":
        return
    stream = sys.stderr if kind in ("stop", "abort", "warning") else sys.stdout
    prefix = "\n" if kind in ("stop", "abort") else ""
    stream.write(f"{prefix}{message}\n")
    stream.flush()


def _speed_text(summary: dict[str, Any]) -> str:
    """'run s | env-steps/s' of a summary; a resumed run that had nothing left says so instead."""
    rate = summary.get("env_steps_per_second")
    if rate is None or not math.isfinite(rate):
        return "no updates were left to run"
    return f"run {summary['run_seconds']:.1f} s | {rate:,.0f} env-steps/s"


def final_line(summary: dict[str, Any], out: Path) -> str:
    """The closing lines: the final return (mean of the last 10 % of updates), timings, folder."""
    mean = summary.get("final_return_mean")
    if mean is None or not math.isfinite(mean):
        shown = "no episode ended"
    else:
        spread = ""
        if len(summary["seeds"]) > 1:
            spread = f" ± {summary['final_return_std']:.1f} (min {summary['final_return_min']:.1f})"
        shown = f"{mean:.2f}{spread}"
    return (
        f"final return (last 10% of updates) {shown} | compile {summary['compile_seconds']:.1f} s | "
        f"{_speed_text(summary)}\nrun folder: {out}"
    )


def _silent(*args: Any) -> None:
    return None


def _start_processes(args: argparse.Namespace) -> bool:
    """Start JAX (before its first computation): one process spreads seeds over the CPU cores,
    several join `jax.distributed`. Returns whether this process prints and writes (process 0)."""
    from ppo_jax.runtime.cpu import split_runs_over_cores
    from ppo_jax.runtime.processes import initialize, resolve_processes

    processes = resolve_processes(args.coordinator_address, args.num_processes, args.process_id)
    if processes is None:
        if not args.shard_envs:
            split_runs_over_cores(requested_seeds(args, "config.json"))  # seeds spread over the cores
        return True
    if not args.resume and not args.shard_envs:  # refused before starting (a resumed run's layout is in its folder)
        raise ConfigError("shard_envs", "several processes train one run: add --shard-envs (seeds: ppo-jax sweep)")
    if not args.resume and args.out is None:
        raise ConfigError("out", "several processes write one run folder: give --out DIR, a path every process reaches")
    initialize(processes, args.distributed_timeout)
    import jax

    return jax.process_index() == 0


def cmd_train(args: argparse.Namespace) -> int:
    use_compile_cache(args)  # before any compile: JAX decides once per process whether it caches
    writer = _start_processes(args)

    from ppo_jax.commands.progress import TrainProgress
    from ppo_jax.runtime.driver import execute
    from ppo_jax.runtime.planning import plan_run

    progress = None if args.quiet else TrainProgress() if writer else _silent  # every process chunks alike
    if args.resume:
        _refuse_flags_with_resume(args)
        config, seeds = None, 1
    else:
        config, seeds = config_from_args(args), args.seeds
    plan = plan_run(
        config,
        out=args.out,
        seeds=seeds,
        checkpoint_every=args.checkpoint_every,
        keep=args.keep,
        resume=args.resume,
        overwrite=args.overwrite,
        shard_envs=args.shard_envs,
        callback=progress,
        loggers=loggers_from_args(args, announce=writer),
    )
    if not writer:
        execute(plan, _silent)
        return 0
    if progress is None:
        summary = execute(plan, notify)
    else:
        progress.expect(plan.config.env_steps * len(plan.seeds), len(plan.seeds))
        try:
            summary = execute(plan, functools.partial(_notify_over, progress))
        finally:
            progress.stop()
    print(final_line(summary, plan.out))
    return 0


def _notify_over(progress, kind: str, message: str) -> None:
    """`notify`, after erasing the progress' waiting line; after the start (or resume) line the
    waiting line says the program compiles, and "running" says it is ready."""
    if kind == "running":
        progress.running(message)
        return
    progress.clear()
    notify(kind, message)
    if kind in ("start", "resume"):
        progress.compiling()
