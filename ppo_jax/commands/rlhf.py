"""The `rlhf` command: fine-tune a small language model with PPO, GRPO, RLOO or REINFORCE.

Default: the arithmetic task (`a+b=`, exact-match reward) with GRPO and the transformer. Every
`RLHFConfig` field is a flag (`--algo ppo`, `--loss-aggregation token-mean`, ...). `--compare`
runs the variants of `ppo_jax.rlhf.variants` from one pretrained model and prints a table.
`add_rlhf_parser(subparsers)` registers the subcommand; `python -m ppo_jax.commands.rlhf` runs it
standalone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ppo_jax.commands.common import (
    add_cache_flag,
    add_logging_flags,
    loggers_from_args,
    run_command,
    use_compile_cache,
)
from ppo_jax.commands.field_flags import add_field_flag, typed
from ppo_jax.commands.parsing import CommandParser
from ppo_jax.errors import ConfigError
from ppo_jax.fields import Field
from ppo_jax.rlhf.config import FIELDS, RLHFConfig
from ppo_jax.runtime import files, folder_lock

SHOWN = ("true_reward", "reward", "kl", "entropy", "length", "train_clip_frac")


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--out`, `--overwrite`, `--quiet`, `--seeds`, `--compare`, `--no-compile-cache` and one flag
    per `RLHFConfig` field (defaults: the config's)."""
    parser.add_argument("--out", default=None, help="output folder (default: runs/rlhf-<algo>-<timestamp>)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run files in --out (an earlier run there is deleted)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.add_argument(
        "--seeds",
        type=typed("seeds", int),
        default=1,
        help="RL seeds run at once by jax.vmap (one pretrained model; default: 1)",
    )
    parser.add_argument(
        "--compare",
        nargs="?",
        const="all",
        default=None,
        metavar="VARIANTS",
        help="run several variants from one pretrained model (comma-separated; default: all of "
        "grpo, dr-grpo, dapo, ppo, rloo, reinforce, gspo, cispo, reinforce++) and print a table",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=typed("checkpoint_every", int),
        default=0,
        metavar="N",
        help="save the RL phase every N updates into <out>/checkpoints, so that Ctrl-C or SIGTERM stops at "
        "the next one and --resume continues exactly (default: 0, no checkpoints)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run stopped in RUN_DIR from its newest RL checkpoint (its config, seeds and interval)",
    )
    add_cache_flag(parser)
    add_logging_flags(parser)
    for field in FIELDS.values():
        add_rlhf_field_flag(parser, field)
    return parser


def add_rlhf_field_flag(parser: argparse.ArgumentParser, field: Field) -> None:
    """The flag of one declared `RLHFConfig` field (`field_flags.add_field_flag`: booleans as
    `--x`, `--no-x` or `--x true`); its default is the field's, its help lists the allowed
    strings."""
    tag = "traced; " if field.traced else ""
    allowed = f"one of {field.allowed_text()}; " if field.choices else ""
    help_text = f"{field.help} ({tag}{allowed}default: {field.default})"
    add_field_flag(parser, field, default=field.default, help_text=help_text)


def add_rlhf_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `rlhf` subcommand; its handler is `rlhf_main` (set as the `func` default)."""
    parser = subparsers.add_parser(
        "rlhf",
        help="language-model RL: GRPO / PPO fine-tuning on arithmetic or a learned preference",
        description=__doc__.splitlines()[0],
    )
    configure_parser(parser)
    parser.set_defaults(func=rlhf_main)
    return parser


def _format(metrics: dict[str, Any], names: tuple[str, ...], metric: str = "true_reward") -> str:
    """Values of `names` (means, if a report carries several seeds); true_reward shown as `metric`."""
    shown = [(metric if name == "true_reward" else name, name) for name in names if name in metrics]
    return "  ".join(f"{label} {float(np.mean(metrics[name])):.4f}" for label, name in shown)


class ETA:
    """Time left in a phase from the rate of its steps since the first report seen (a resumed run
    starts counting where it resumed)."""

    def __init__(self):
        self.first: dict[str, tuple[int, float]] = {}

    def __call__(self, phase: str, step: int, total: int) -> str:
        now = time.perf_counter()
        start_step, start = self.first.setdefault(phase, (step, now))
        if step <= start_step or step >= total:
            return ""
        left = (now - start) / (step - start_step) * (total - step)
        minutes, seconds = divmod(int(round(left)), 60)
        return f"  ETA {minutes}m{seconds:02d}s" if minutes else f"  ETA {seconds}s"


class Printer:
    """The progress callback(phase, step, metrics): one line per report (every ~5% of the RL
    updates) with the time left in the phase, and a waiting line while a phase compiles (until its
    first report)."""

    def __init__(self, config: RLHFConfig):
        from ppo_jax.commands.progress import Waiting

        self.config = config
        self.rl_every = max(1, config.rl_updates // 20)
        self.new_waiting = Waiting
        self.eta = ETA()
        straight_to_rl = not config.pretrain_steps and config.task != "preference"  # no reward model either
        first = f"the first {config.algo} updates" if straight_to_rl else "the first phase"
        self.waiting = Waiting(f"compiling {first}")

    def stop(self) -> None:
        if self.waiting is not None:
            self.waiting.stop()
            self.waiting = None

    def __call__(self, phase: str, step, metrics: dict[str, Any]) -> None:
        self.stop()
        config, step, eta = self.config, int(np.max(step)), self.eta
        if phase.endswith("pretrain"):
            left = eta(phase, step, config.pretrain_steps)
            print(f"[pretrain {step:5d}/{config.pretrain_steps}]  {_format(metrics, ('loss',))}{left}", flush=True)
            last = step == config.pretrain_steps
        elif phase.endswith("reward_model"):
            line = _format(metrics, ("loss", "accuracy")) + eta(phase, step, config.rm_steps)
            print(f"[reward model {step:5d}/{config.rm_steps}]  {line}", flush=True)
            last = step == config.rm_steps
        else:
            left = eta(phase, step, config.rl_updates)  # every update, for the rate
            if step % self.rl_every == 0 or step == config.rl_updates:
                name = phase[: -len("/rl")] if "/" in phase else config.algo
                shown = _format(metrics, SHOWN, config.task_metric)
                print(f"[{name} {step:4d}/{config.rl_updates}]  {shown}{left}", flush=True)
            last = step == config.rl_updates
        if last:
            self.waiting = self.new_waiting("compiling the next phase")


def make_printer(config: RLHFConfig) -> Printer:
    """The command's progress callback (see `Printer`)."""
    return Printer(config)


def print_summary(result, out: Path) -> None:
    s = result.summary
    if "accuracy_before" in s:
        print(f"held-out accuracy  {s['accuracy_before']:.3f} -> {_with_ci(s, 'accuracy_after')}")
    else:
        print(f"true reward      {s['true_reward_before']:.3f} -> {_with_ci(s, 'true_reward_after')}")
        print(f"learned reward   {s['learned_reward_before']:.3f} -> {_with_ci(s, 'learned_reward_after')}")
        print(f"reward model held-out accuracy {s['reward_model_accuracy']:.3f}")
    print(f"KL to reference  {_with_ci(s, 'kl_to_reference')} nats per completion")
    print(f"completion length {s['length_before']:.2f} -> {s['length_after']:.2f} tokens")
    for title, rows in (("before", result.samples_before), ("after", result.samples_after)):
        print(f"samples {title}: " + "  ".join(f"{r['prompt']}{r['completion']}" for r in rows))
    print("wall seconds  " + "  ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    print(f"wrote {out}")


def _with_ci(summary: dict[str, Any], name: str) -> str:
    ci = summary.get(f"{name}_ci95")
    return f"{summary[name]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def compare_table(results: dict) -> list[str]:
    """One line per variant: task metric before -> after (mean over seeds [95 % bootstrap CI]),
    KL to the reference, completion length, RL wall and CPU seconds."""
    first = next(iter(results.values())).summary
    metric = "accuracy" if "accuracy_before" in first else "true_reward"
    head = f"{'variant':<10} {metric + ' before -> after':>32} {'KL':>20} {'length':>7} {'RL s':>7} {'RL cpu s':>9}"
    lines = [head]
    for name, result in results.items():
        s = result.summary
        change = f"{s[metric + '_before']:.3f} -> {_with_ci(s, metric + '_after')}"
        row = f"{name:<10} {change:>32} {_with_ci(s, 'kl_to_reference'):>20} {s['length_after']:>7.2f}"
        lines.append(row + f" {result.timings['rl']:>7.1f} {result.cpu_seconds['rl']:>9.1f}")
    return lines


def _compare(config: RLHFConfig, args: argparse.Namespace) -> int:
    from ppo_jax.rlhf import run_files
    from ppo_jax.rlhf.variants import VARIANTS, run_compare, variant_configs

    names = list(VARIANTS) if args.compare == "all" else [n.strip() for n in args.compare.split(",") if n.strip()]
    variant_configs(config, names)  # refuse bad names and combinations before anything compiles
    out = Path(args.out) if args.out else files.default_run_dir("rlhf-compare")
    folder_lock.hold(out)  # created, checked writable, held until this command ends
    run_files.claim_run_dir(out, args.overwrite, tuple(VARIANTS))
    use_compile_cache(args)

    def save(name: str, result) -> None:
        run_files.write_run(out / name, result)

    printer = None if args.quiet else make_printer(config)
    try:
        results = run_compare(config, names, printer, save, args.seeds)
    finally:
        if hasattr(printer, "stop"):  # a callback of its own (tests) has nothing to stop
            printer.stop()
    table = compare_table(results)
    summary = {
        name: {**r.summary, "wall_seconds": r.timings, "cpu_seconds": r.cpu_seconds} for name, r in results.items()
    }
    files.write_json(out / run_files.COMPARE_NAME, {"variants": summary, "table": table})
    run_files.plot_compare(results, out / run_files.COMPARE_PLOT_NAME)
    print("\n".join(table))
    print(f"wrote {out}")
    return 0


def notify(kind: str, message: str) -> None:
    """Stop requests on stderr."""
    sys.stderr.write(f"\n{message}\n")
    sys.stderr.flush()


def _resumed(args: argparse.Namespace) -> tuple[RLHFConfig, int, int, Path]:
    """(config, seeds, checkpoint interval, folder) of the run to resume, from its config.json."""
    from ppo_jax.rlhf import run_files

    out = Path(args.resume)
    if not out.is_dir():
        raise ConfigError("resume", f"run folder {out} does not exist")
    saved = files.read_json(out / run_files.CONFIG_NAME, "the config of an rlhf run")
    if not isinstance(saved, dict) or "checkpoint_every" not in saved:
        raise ConfigError("resume", f"{out} holds no resumable rlhf run (one started with --checkpoint-every)")
    config = RLHFConfig(**{name: value for name, value in saved.items() if name in FIELDS})
    return config, int(saved["seeds"]), int(saved["checkpoint_every"]), out


def _check_run_flags(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise ConfigError("seeds", f"must be a positive integer, got {args.seeds}")
    if args.checkpoint_every < 0:
        raise ConfigError("checkpoint_every", f"must be >= 0, got {args.checkpoint_every}")
    if args.compare is not None and (args.checkpoint_every or args.resume):
        raise ConfigError("compare", "runs without checkpoints; remove --checkpoint-every and --resume")
    if args.compare is not None and (args.tensorboard or args.wandb):
        raise ConfigError("compare", "runs without live logging; remove --tensorboard and --wandb")


def check_memory(config: RLHFConfig, seeds: int, quiet: bool) -> None:
    """Print the memory estimate of one RL update (hf: models) and refuse a run that cannot fit
    (`ConfigError` naming the flags to change), before anything compiles."""
    from ppo_jax.rlhf import memory

    run = memory.run_memory(config, seeds)
    if run is None:
        return
    if not quiet:
        print(run.estimate.describe(), flush=True)
    run.check()


def rlhf_main(args: argparse.Namespace) -> int:
    """Run the pipeline from parsed arguments; a bad setting raises `ConfigError` (exit code 2)."""
    config = RLHFConfig(**{name: getattr(args, name) for name in FIELDS})
    _check_run_flags(args)
    if args.compare is not None:
        return _compare(config, args)
    from ppo_jax.rlhf import run_files
    from ppo_jax.rlhf.live_log import LiveLog
    from ppo_jax.rlhf.pipeline import run_rlhf
    from ppo_jax.rlhf.rl_run import RunOptions
    from ppo_jax.rlhf.variants import VARIANTS
    from ppo_jax.runtime.signals import StopRequest

    if args.resume:
        if Path(args.resume).is_dir():  # until this command ends (a missing folder is refused below)
            folder_lock.hold(args.resume, "resume")
        if (Path(args.resume) / run_files.RESULT_NAME).exists():
            print(f"{args.resume} holds a finished run; nothing was left to run")
            return 0
        config, seeds, every, out = _resumed(args)
        check_memory(config, seeds, args.quiet)
    else:
        seeds, every = args.seeds, args.checkpoint_every
        check_memory(config, seeds, args.quiet)
        out = Path(args.out) if args.out else files.default_run_dir(f"rlhf-{config.algo}")
        folder_lock.hold(out)  # created, checked writable, held until this command ends
        run_files.claim_run_dir(out, args.overwrite, tuple(VARIANTS))
        if every:
            record = {**config.to_dict(), "seeds": seeds, "checkpoint_every": every}
            files.write_json(out / run_files.CONFIG_NAME, record)
    use_compile_cache(args)
    printer = None if args.quiet else make_printer(config)
    live = LiveLog(loggers_from_args(args, announce=True), printer, config.task_metric)
    live.open(out, {**config.to_dict(), "seeds": seeds}, seeds, bool(args.resume))
    result = None
    try:
        with StopRequest(every > 0 and every < config.rl_updates, notify) as stop:
            report = max(1, config.rl_updates // 20)  # the printer's interval; the programs stay cacheable
            options = RunOptions(out if every else None, every, bool(args.resume), stop, report_every=report)
            result = run_rlhf(config, callback=live if live.loggers else printer, seeds=seeds, options=options)
    finally:
        live.stop()
        live.close(None if result is None else result.summary)
    run_files.write_run(out, result)
    print_summary(result, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(CommandParser(prog="ppo-jax rlhf", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    args.func = rlhf_main
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
