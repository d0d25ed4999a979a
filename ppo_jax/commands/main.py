"""The `ppo-jax` command: subcommands train, eval, sweep, compare, rlhf (and bench from a source
checkout). Commands parse flags, call the library and print; they are the only place that does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ppo_jax.commands.common import run_command
from ppo_jax.commands.compare import add_compare_parser
from ppo_jax.commands.evaluate import add_eval_parser
from ppo_jax.commands.rlhf import add_rlhf_parser
from ppo_jax.commands.sweep import add_sweep_parser
from ppo_jax.commands.train import add_train_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-jax", description="Pure-functional PPO in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub)
    add_eval_parser(sub)
    add_compare_parser(sub)
    add_sweep_parser(sub)
    sub.add_parser("bench", help="benchmark against rejax and Stable-Baselines3 (source checkout: scripts/)")
    add_rlhf_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    if argv[0] == "bench":  # the benchmark owns its flags and lives in scripts/ of a source checkout
        import subprocess
        from pathlib import Path

        import ppo_jax

        script = Path(ppo_jax.__file__).resolve().parents[1] / "scripts" / "benchmark.py"
        if not script.exists():
            print(
                "ppo-jax: error: the benchmark lives in scripts/benchmark.py of a source checkout of ppo_jax "
                "(it needs scripts/peers/); run it from there",
                file=sys.stderr,
            )
            return 2
        return subprocess.run([sys.executable, str(script), *argv[1:]]).returncode
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
