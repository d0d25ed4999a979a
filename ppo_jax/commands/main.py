"""The `ppo-jax` command: subcommands train, eval, sweep, compare, rlhf (and bench from a source
checkout). Commands parse flags, call the library and print; they are the only place that does."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ppo_jax.commands.common import StderrFilter, add_referenced_part_flags, help_env, print_err, run_command
from ppo_jax.commands.parsing import CommandParser
from ppo_jax.errors import ConfigError

# Each command's parser, as (module, function, whether it takes the env whose defaults its help
# shows); a module is imported only when its parser is built.
PARSERS = {
    "train": ("ppo_jax.commands.train", "add_train_parser", True),
    "eval": ("ppo_jax.commands.evaluate", "add_eval_parser", False),
    "compare": ("ppo_jax.commands.compare", "add_compare_parser", True),
    "sweep": ("ppo_jax.commands.sweep", "add_sweep_parser", True),
    "rlhf": ("ppo_jax.commands.rlhf", "add_rlhf_parser", False),
}


def build_parser(command: str | None = None, env: str = "CartPole-v1") -> argparse.ArgumentParser:
    """The `ppo-jax` parser; the config flags' help shows `env`'s shipped defaults. With `command`
    one of `PARSERS`, only that command has its flags: the others are bare names (still listed for
    a typo), and the code their flags import is left out (every part's fields for train, sweep and
    compare: Flax, optax, the environment suites; the language-model code for rlhf)."""
    import importlib

    parser = CommandParser(prog="ppo-jax", description="Pure-functional PPO in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(subcommands=sub.choices)
    for name, (module, function, takes_env) in PARSERS.items():
        if command in PARSERS and name != command:
            sub.add_parser(name)
            continue
        add = getattr(importlib.import_module(module), function)
        if takes_env:
            add(sub, env)
        else:
            add(sub)
        if name == "sweep":  # listed in this order by `ppo-jax --help`
            sub.add_parser("bench", help="benchmark against rejax and Stable-Baselines3 (source checkout: scripts/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ppo-jax ARGV` and return its exit code. From the console (`argv` None), the process
    ends right after the command: every file is written and closed, and loggers and checkpoints
    are closed, by then. A failed command's error line is the last thing printed (threads that
    orbax or tensorstore left behind print nothing after it), and a finished one does not wait for
    the interpreter's teardown (JAX's backends, loaded modules: up to a few tenths of a second),
    unless it joined JAX's distributed runtime."""
    if not isinstance(sys.stderr, StderrFilter):
        sys.stderr = StderrFilter(sys.stderr)
    code = _main(argv)
    if argv is None and (code != 0 or not _distributed()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _distributed() -> bool:
    """Whether this process joined JAX's distributed runtime (it leaves it at exit, which the other
    processes wait for)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None, help_env(argv))
    if not argv:  # bare `ppo-jax`: the commands, nothing started
        parser.print_help()
        return 0
    if argv[0] == "bench":
        return _bench(argv[1:])
    try:  # a bad flag is one line and exit code 2 (`CommandParser`); --help exits 0
        add_referenced_part_flags(parser, argv)  # --objective pkg.mod:OBJ gives OBJ's own fields their flags
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the subcommand's parser, which knows its flags
            args.subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except ConfigError as err:  # an unimportable reference: one line
        print_err(str(err))
        return 2
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 2
    if args.command is None:  # only global flags were given
        parser.print_help()
        return 2
    return run_command(args)


def _bench(argv: list[str]) -> int:
    """The benchmark owns its flags and lives in scripts/ of a source checkout."""
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
    return subprocess.run([sys.executable, str(script), *argv]).returncode


if __name__ == "__main__":
    sys.exit(main())
