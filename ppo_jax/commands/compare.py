"""`ppo-jax compare`: the policy-gradient chain side by side (clip, kl_penalty, reinforce, a2c,
trpo), each trained over the same seeds, with a ranked table and learning curves."""

from __future__ import annotations

import argparse
import sys

from ppo_jax.commands.common import (
    add_cache_flag,
    add_config_flags,
    config_from_args,
    part_overrides,
    refuse_flags_with_resume,
    requested_seeds,
    use_compile_cache,
)
from ppo_jax.config import OBJECTIVE_NAMES, resolve_seeds
from ppo_jax.errors import ConfigError
from ppo_jax.fields import declared
from ppo_jax.plugins import is_reference, resolve_objective


def add_compare_parser(sub, help_env: str = "CartPole-v1") -> argparse.ArgumentParser:
    cmp = sub.add_parser(
        "compare",
        help=f"train {', '.join(OBJECTIVE_NAMES)} over seeds and compare their learning curves",
        description="Train each objective over the same seeds. Writes compare_plan.json, compare.json, "
        "compare.png and one training run's folder per objective (arms/<objective>/: what ppo-jax train "
        "writes, for ppo-jax eval) to the output folder.",
    )
    add_config_flags(cmp, help_env)
    cmp.add_argument("--seeds", type=int, default=8, help="seeds per objective (default: 8)")
    cmp.add_argument(
        "--objectives",
        default=",".join(OBJECTIVE_NAMES),
        help="comma-separated objectives: shipped names or package.module:attribute references",
    )
    cmp.add_argument("--out", default=None, help="output folder (default: runs/compare-<env>-<timestamp>)")
    cmp.add_argument("--overwrite", action="store_true", help="replace the comparison's files in --out")
    cmp.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save the training arm's state every N updates: Ctrl-C stops at the next one and --resume continues",
    )
    cmp.add_argument("--keep", type=int, default=None, metavar="K", help="keep only each arm's newest K checkpoints")
    cmp.add_argument(
        "--resume",
        default=None,
        metavar="COMPARE_DIR",
        help="continue a stopped comparison: finished arms are kept, the stopped one resumes from its checkpoint",
    )
    cmp.add_argument("--quiet", action="store_true", help="no progress while compiling and training, only the table")
    add_cache_flag(cmp)
    cmp.set_defaults(func=cmd_compare)
    return cmp


class ArmProgress:
    """compare's notify(kind, message): a waiting line while the programs compile and while each
    objective trains, one line as each objective finishes (nothing of these when `quiet`); stop
    requests and warnings on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.waiting = None

    def stop(self) -> None:
        if self.waiting is not None:
            self.waiting.stop()
            self.waiting = None

    def __call__(self, kind: str, message: str) -> None:
        from ppo_jax.commands.progress import Waiting

        if kind in ("stop", "abort", "warning"):
            self.stop()
            prefix = "\n" if kind in ("stop", "abort") else ""
            sys.stderr.write(f"{prefix}{message}\n")
            sys.stderr.flush()
            return
        if self.quiet or kind == "running":  # each arm's waiting line already says it trains
            return
        self.stop()
        if kind in ("compile", "arm"):
            self.waiting = Waiting(message)
        else:
            print(message, flush=True)


def _refuse_flags_with_resume(args: argparse.Namespace) -> None:
    own = ["--seeds"] if args.seeds != 8 else []
    own += ["--objectives"] if args.objectives != ",".join(OBJECTIVE_NAMES) else []
    refuse_flags_with_resume(args, "a resumed comparison keeps its objectives, config, seeds and folder", own)


def _plan(args: argparse.Namespace):
    """The comparison's plan from the flags (or from the folder of `--resume`); nothing compiled."""
    from ppo_jax.runtime import files
    from ppo_jax.runtime.compare import plan_compare, plan_compare_resume

    if args.resume:
        _refuse_flags_with_resume(args)
        return plan_compare_resume(args.resume, args.checkpoint_every, args.keep)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVE_NAMES and not is_reference(o)]
    if unknown or not objectives:
        raise ConfigError(
            "objectives", f"choose from {', '.join(OBJECTIVE_NAMES)} or references, got {args.objectives!r}"
        )
    own = declared([resolve_objective(o) for o in objectives])  # each arm's own fields go to that arm
    if args.seeds < 1:
        raise ConfigError("seeds", f"must be a positive integer, got {args.seeds}")
    if args.objective is not None:
        raise ConfigError("objective", "compare trains each of --objectives; remove --objective")
    config = config_from_args(args, exclude=own)
    options = {k: v for k, v in part_overrides(args).items() if k in own}
    seeds = list(resolve_seeds(config, args.seeds))
    out = args.out or files.default_run_dir(f"compare-{config.env}")
    return plan_compare(
        config,
        objectives,
        seeds,
        options,
        out=out,
        checkpoint_every=args.checkpoint_every,
        keep=args.keep,
        overwrite=args.overwrite,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from ppo_jax.runtime.compare import run_compare
    from ppo_jax.runtime.cpu import split_runs_over_cores
    from ppo_jax.runtime.records import compare_rows

    use_compile_cache(args)
    seeds = requested_seeds(args, "compare_plan.json")
    if seeds >= 1:  # before JAX starts: the seeds of each arm are split over the CPU cores
        split_runs_over_cores(seeds)
    plan = _plan(args)
    config, out = plan.config, plan.out
    verb = "resuming the comparison of" if plan.resume else "comparing"
    steps = f"{len(plan.seeds)} seeds x {config.env_steps:,} steps"
    print(f"{verb} {', '.join(plan.objectives)} on {config.env}: {steps} -> {out}", flush=True)
    progress = ArmProgress(args.quiet)
    try:
        results = run_compare(plan, progress, handle_signals=True)
    finally:
        progress.stop()
    width = max(11, *(len(o) for o in plan.objectives))
    header = f"{'final mean':>10} {'IQM':>8} {'95% CI':>19} {'AUC':>8} {'run s':>7} {'compile s':>9}"
    print(f"{'objective':<{width}} {header}")
    for r in compare_rows(results):
        ci = f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
        print(
            f"{r['objective']:<{width}} {r['final_return_mean']:>10.1f} {r['iqm']:>8.1f} {ci:>19} {r['auc']:>8.1f} "
            f"{r['seconds']:>7.1f} {r['compile_seconds']:>9.1f}"
        )
    print(f"wrote {out / 'compare.json'}, {out / 'compare.png'} and a run folder per objective in {out / 'arms'}")
    return 0
