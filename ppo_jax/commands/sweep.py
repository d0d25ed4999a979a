"""The `ppo-jax sweep` command: seeds × hyperparameters in one compiled program, a ranked table,
and a sweep folder (sweep.json, per-run metrics.csv, curves.png, sensitivity plots).

Runnable on its own as `python -m ppo_jax.commands.sweep [FLAGS]`.
"""

from __future__ import annotations

import argparse
import functools
import math
import resource
import sys
import textwrap
from collections.abc import Sequence

from ppo_jax.commands.common import (
    add_cache_flag,
    add_config_flags,
    add_distributed_flags,
    add_logging_flags,
    add_part_flags,
    config_from_args,
    help_env,
    loggers_from_args,
    print_err,
    referenced_part_fields,
    refuse_flags_with_resume,
    run_command,
    start_distributed,
    use_compile_cache,
)
from ppo_jax.commands.parsing import CommandParser
from ppo_jax.commands.progress import SweepProgressBar, plural
from ppo_jax.config import TRACED_FIELDS, ConfigError

DESCRIPTION = (
    "Train a grid or a random search of traced hyperparameters × seeds as one compiled program "
    "(jax.vmap over runs). Writes sweep.json, runs/<configuration>/seed<N>/metrics.csv, curves.png "
    "and sensitivity_<field>.png to the sweep folder and prints a table ranked by the IQM of the "
    "final return over seeds, with a 95% stratified-bootstrap confidence interval."
)
EPILOG = """examples:
  ppo-jax sweep --env CartPole-v1 --seeds 16 --grid lr=1e-4,3e-4,1e-3 --grid clip_eps=0.1,0.2,0.3
  ppo-jax sweep --random "lr=loguniform(1e-5,1e-2)" --random "ent_coef=uniform(0,0.05)" --samples 32
""" + textwrap.fill(
    f"Only traced fields can be swept ({', '.join(TRACED_FIELDS)}), and the traced fields the run's parts "
    "declare (kl_coef and kl_target of kl_penalty, max_kl of trpo, a referenced objective's own); static fields "
    "(num_envs, num_steps, network sizes, env, ...) are set once per sweep.",
    width=110,
)
PARSER_TEXT = dict(description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_sweep_arguments(parser: argparse.ArgumentParser, help_env: str = "CartPole-v1") -> None:
    """The sweep's own flags plus one flag per `PPOConfig` field (the base configuration); the
    parsed namespace runs `run_sweep_command`."""
    group = parser.add_argument_group("sweep")
    group.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="values of one traced field; repeat for a Cartesian grid",
    )
    group.add_argument(
        "--random",
        action="append",
        default=[],
        metavar="NAME=DIST(LOW,HIGH)",
        help="random search over one traced field: uniform(a,b) or loguniform(a,b); repeat per field",
    )
    group.add_argument("--samples", type=int, default=0, help="random-search configurations to draw")
    group.add_argument("--sample-seed", type=int, default=None, help="seed of the random search (default: --seed)")
    group.add_argument(
        "--seeds", type=int, default=8, help="seeds per configuration: --seed, --seed+1, ... (default: 8)"
    )
    group.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        metavar="K",
        help="runs per batch through the compiled program (default: as many as fit in half the free memory)",
    )
    group.add_argument("--out", default=None, help="sweep folder (default: sweeps/<env>-<timestamp>)")
    group.add_argument("--overwrite", action="store_true", help="replace the sweep files in --out")
    group.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save every run's state every N updates: Ctrl-C stops at the next one and --resume continues exactly",
    )
    group.add_argument("--keep", type=int, default=None, metavar="K", help="keep only the newest K checkpoints")
    group.add_argument(
        "--resume", default=None, metavar="SWEEP_DIR", help="continue a stopped sweep from its newest checkpoint"
    )
    group.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files per run")
    add_logging_flags(parser, tensorboard=False)
    group.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    group.add_argument("--bootstrap-reps", type=int, default=10_000, help="bootstrap replicates (default: 10000)")
    group.add_argument("--quiet", action="store_true", help="no live progress line")
    add_distributed_flags(parser)
    add_cache_flag(parser)
    add_config_flags(parser, help_env)
    parser.set_defaults(func=run_sweep_command)


def add_sweep_parser(subparsers, help_env: str = "CartPole-v1") -> argparse.ArgumentParser:
    """Register `sweep` on the `ppo-jax` subcommand parsers; it runs `run_sweep_command`."""
    parser = subparsers.add_parser(
        "sweep", help="train seeds × hyperparameters in one compiled program; ranked table and plots", **PARSER_TEXT
    )
    add_sweep_arguments(parser, help_env)
    return parser


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.1f}"


def format_table(result) -> str:
    """The ranked table: one row per configuration, best IQM first."""
    pct = f"{round(100 * result.confidence):d}% CI"
    header = ["rank", *result.names, "final mean", "IQM", pct, "AUC"]
    rows = []
    for position, c in enumerate(result.ranking, start=1):
        s = result.summaries[c]
        values = [f"{s.hyperparams[n]:.4g}" for n in result.names]
        ci = f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"
        rows.append([str(position), *values, _fmt(s.final_return_mean), _fmt(s.iqm), ci, _fmt(s.auc)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = {i for i, h in enumerate(header) if h == pct}
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _search(args: argparse.Namespace, grid: dict, dists: dict, sample_seed: int) -> dict:
    search: dict = {}
    if grid:
        search["grid"] = {n: list(v) for n, v in grid.items()}
    if dists:
        search["random"] = {n: str(d) for n, d in dists.items()}
        search["samples"] = args.samples
        search["sample_seed"] = sample_seed
    return search


def _check_flags(args: argparse.Namespace) -> None:
    loggers_from_args(args)  # a missing logging package is refused here, before compiling
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError("confidence", f"must be in (0, 1), got {args.confidence}")
    if args.bootstrap_reps < 1:
        raise ConfigError("bootstrap_reps", f"must be a positive integer, got {args.bootstrap_reps}")


def _refuse_flags_with_resume(args: argparse.Namespace) -> None:
    own = [f"--{n}" for n in ("grid", "random") if getattr(args, n)] + (["--samples"] if args.samples else [])
    own += ["--seeds"] if args.seeds != 8 else []
    refuse_flags_with_resume(args, "a resumed sweep keeps its configurations, seeds and folder", own)


def _plan(args: argparse.Namespace, writer: bool):
    """The sweep's plan from the flags (or from the folder of `--resume`); nothing compiled."""
    from ppo_jax.runtime import files
    from ppo_jax.runtime.sweeps import make_configurations, parse_grid, parse_random, plan_sweep, plan_sweep_resume

    _check_flags(args)
    if args.resume:
        _refuse_flags_with_resume(args)
        return plan_sweep_resume(args.resume, args.max_parallel, args.checkpoint_every, args.keep)
    config = config_from_args(args)
    grid, dists = parse_grid(args.grid, config), parse_random(args.random, config)
    sample_seed = config.seed if args.sample_seed is None else args.sample_seed
    configurations = make_configurations(grid, dists, args.samples, sample_seed, config)
    out = None
    if writer:  # every process computes its share; process 0 writes
        out = args.out or files.default_run_dir(config.env, root="sweeps")
    elif args.checkpoint_every is not None:  # every process saves its share of the checkpoints there
        out = args.out
    return plan_sweep(
        config,
        configurations,
        args.seeds,
        args.max_parallel,
        out=out,
        checkpoint_every=args.checkpoint_every,
        keep=args.keep,
        overwrite=args.overwrite,
        search=_search(args, grid, dists, sample_seed),
    )


def run_sweep_command(args: argparse.Namespace) -> int:
    """`ppo-jax sweep`: validate everything, compile once, train in chunks, write the sweep folder."""
    import jax

    start_distributed(args)  # before any computation (importing gymnax runs one); bad flags are refused first
    use_compile_cache(args)
    from ppo_jax.runtime.distributed import topology
    from ppo_jax.runtime.sweeps import run_sweep

    writer = jax.process_index() == 0
    plan = _plan(args, writer)  # all checks, no compile
    if not writer:  # the same program on every process: a silent callback where process 0 has one
        silent = None if args.quiet else (lambda progress: None)
        run_sweep(plan, silent, args.confidence, args.bootstrap_reps, handle_signals=True)  # a stop: exit 130 too
        return 0
    where, config = topology(), plan.config
    batches = f"{plan.num_batches} batches of {plan.max_parallel}" if plan.num_batches > 1 else "one batch"
    print(
        f"sweeping {config.env}: {plural(len(plan.configurations), 'configuration')} x "
        f"{plural(len(plan.seeds), 'seed')} = {plural(plan.num_runs, 'run')} x {config.env_steps:,} steps ({batches}) "
        f"on {where['devices']} device(s) in {where['processes']} process(es) -> {plan.out}",
        flush=True,
    )
    progress = None if args.quiet else SweepProgressBar()
    notify = functools.partial(_notify, progress)
    loggers = loggers_from_args(args, tensorboard_subdir="", group=plan.out.name, announce=True)
    try:
        result = run_sweep(
            plan, progress, args.confidence, args.bootstrap_reps, notify=notify, handle_signals=True, loggers=loggers
        )
    finally:
        if progress is not None:
            progress.stop()
    print(
        f"compiled {result.compiles} program{'s' if result.compiles != 1 else ''} in {result.compile_seconds:.1f} s | "
        f"ran {plan.num_runs} runs in {result.run_seconds:.1f} s | {result.env_steps_per_second:,.0f} env-steps/s"
    )
    print(format_table(result))
    bad = [s for s in result.summaries if s.nonfinite]
    if bad:
        print(f"warning: {sum(s.nonfinite for s in bad)} run(s) in {len(bad)} configuration(s) produced NaN/Inf")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak memory (RSS) {peak_rss / 2**20:,.0f} MiB\nsweep folder: {plan.out}")
    return 0


def _notify(progress, kind: str, message: str) -> None:
    """The executor's messages (stop requests, resume) on their own line; "running" (the program
    is ready) goes to the progress line, and is not shown without one."""
    if kind == "running":
        if progress is not None:
            progress.running(message)
        return
    if progress is not None:
        progress.stop()
    stream = sys.stderr if kind in ("stop", "abort", "warning") else sys.stdout
    stream.write(("\n" if kind in ("stop", "abort") else "") + message + "\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(prog="ppo-jax sweep", **PARSER_TEXT)
    argv = list(sys.argv[1:] if argv is None else argv)
    add_sweep_arguments(parser, help_env(argv))
    try:  # the fields of parts named by reference become flags
        add_part_flags(parser, referenced_part_fields(argv), "fields of the parts named by reference")
    except ConfigError as err:
        print_err(str(err))
        return 2
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
