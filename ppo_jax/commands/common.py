"""What every command shares: flags generated from `PPOConfig`, the multi-process flags, and
turning library exceptions into one line on stderr and an exit code (no traceback). The config
(and with it every part: Flax, optax, the environment suites) is imported by the functions that
read it, so a command without config flags (`ppo-jax eval`) starts without it."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ppo_jax import plugins
from ppo_jax.commands.field_flags import add_field_flag, flag
from ppo_jax.env_defaults import ENV_DEFAULTS
from ppo_jax.errors import CheckpointError, ConfigError, NonFiniteError, RunFileError, RunStopped
from ppo_jax.fields import Field, declared

if TYPE_CHECKING:
    from ppo_jax.config import PPOConfig


def help_env(argv) -> str:
    """The env named by `--env NAME` or `--env=NAME` in `argv` (CartPole-v1 when none): `--help`
    shows its shipped defaults, wherever `--env` stands relative to `--help`."""
    argv = list(argv or ())
    for i, arg in enumerate(argv):
        if arg == "--env" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
    return "CartPole-v1"


def help_defaults(env: str) -> tuple[PPOConfig, str]:
    """The config `--help` shows for `env` (its shipped settings) and the sentence saying where
    its values come from. An env that does not resolve (an unimportable reference, say) shows
    PPOConfig's values; the run itself then names what is wrong, in one line."""
    from ppo_jax.config import PPOConfig, default_config

    try:
        config = default_config(env)
    except ConfigError:
        return PPOConfig(), f"defaults shown are PPOConfig's (ppo_jax/config.py): {env} does not resolve"
    if env in ENV_DEFAULTS:
        where = (
            f"defaults shown for {env}: values marked 'env_defaults.py' are its shipped settings "
            "(ENV_DEFAULTS in ppo_jax/env_defaults.py), the others PPOConfig's (ppo_jax/config.py)"
        )
    else:
        where = (
            f"defaults shown for {env}: it has no shipped settings, so PPOConfig's (ppo_jax/config.py); "
            f"{len(ENV_DEFAULTS)} envs have their own in ppo_jax/env_defaults.py"
        )
    return config, where + "; --env NAME --help shows another env's"


def add_config_flags(parser: argparse.ArgumentParser, env: str = "CartPole-v1") -> None:
    """One flag per `PPOConfig` field, generated from the dataclass; the help shows `env`'s
    shipped defaults (`help_defaults`)."""
    from ppo_jax.config import FIELDS

    base, where = help_defaults(env)
    shipped = ENV_DEFAULTS.get(env, {})
    group = parser.add_argument_group("config", f"every PPOConfig field; {where}")
    for name, field in FIELDS.items():
        default = getattr(base, name)
        tag = "traced" if field.traced else "static"
        shown = ",".join(map(str, default)) if field.kind is tuple else default
        source = ", env_defaults.py" if name in shipped else ""
        help_text = f"{field.help} ({tag}; default: {shown}{source})"
        add_field_flag(group, field, help_text=help_text)
    add_part_flags(parser, shipped_part_fields(), "fields of the shipped families and objectives")


def shipped_part_fields() -> dict[str, Field]:
    """The fields the shipped families and objectives declare (`rnn_size`, `kl_coef`, ...)."""
    from ppo_jax.core.objectives import OBJECTIVES
    from ppo_jax.policies import FAMILIES

    return declared([*FAMILIES.values(), *OBJECTIVES.values()])


def add_part_flags(parser: argparse.ArgumentParser, fields: dict[str, Field], title: str) -> None:
    """One flag per declared field of a part (those already present are kept)."""
    known = {a.dest for a in parser._actions}
    fresh = {n: f for n, f in fields.items() if n not in known}
    if not fresh:
        return
    group = parser.add_argument_group(title, "fields the part declares; valid when it is part of the run")
    for field in fresh.values():
        tag = "traced" if field.traced else "static"
        shown = ",".join(map(str, field.default)) if field.kind is tuple else field.default
        add_field_flag(group, field, help_text=f"{field.help} ({tag}; default: {shown})")


def _named_references(argv: list[str]) -> list[tuple[str, str]]:
    """(kind, reference) for every --network/--objective/--env/--objectives value that is a
    reference, read from the raw arguments (before the part's own flags exist)."""
    found = []
    options = {flag(k): k for k in plugins.KINDS} | {"--objectives": "objective"}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in options:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            found += [(options[name], v.strip()) for v in value.split(",") if plugins.is_reference(v.strip())]
    return found


def _declared_by(references: list[tuple[str, str]]) -> dict[str, Field]:
    """The fields declared by parts named by reference (`ConfigError` naming an unimportable one)."""
    part_of = {"network": plugins.resolve_family, "objective": plugins.resolve_objective, "env": plugins.env_part}
    return declared([part_of[kind](ref) for kind, ref in references])


def referenced_part_fields(argv: list[str]) -> dict[str, Field]:
    """The fields declared by the parts `argv` names by reference."""
    return _declared_by(_named_references(argv))


def add_referenced_part_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Give the subcommand `argv[0]` the flags of the parts its arguments name by reference, so
    `--objective pkg.mod:OBJ --its-field 3` parses."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(argv[0]) if sub is not None and argv else None
    if command is not None and any(a.dest == "network" for a in command._actions):
        add_part_flags(command, referenced_part_fields(argv[1:]), "fields of the parts named by reference")


def part_overrides(args: argparse.Namespace) -> dict:
    """Values of part fields given as flags (shipped parts' and referenced parts')."""
    named = [(kind, getattr(args, kind, None)) for kind in plugins.KINDS]
    named += [("objective", o.strip()) for o in (getattr(args, "objectives", None) or "").split(",")]
    names = {**shipped_part_fields(), **_declared_by([(k, v) for k, v in named if plugins.is_reference(v)])}
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def requested_seeds(args: argparse.Namespace, record: str) -> int:
    """How many seeds a command runs at once, read without starting JAX (0 if unknown): `--seeds`,
    or with `--resume` the seeds listed in the folder's `record` (config.json, compare_plan.json)."""
    if not args.resume:
        return max(args.seeds or 0, 0)
    try:
        return len(json.loads((Path(args.resume) / record).read_text())["seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # the resume path reports the problem itself


def refuse_flags_with_resume(args: argparse.Namespace, kept: str, own: list[str]) -> None:
    """`ConfigError` naming what was given beside `--resume` that the stopped folder fixes: the
    config and part fields, the command's `own` flags (those it found given), `--out` and
    `--overwrite`. `kept` says what the resumed folder keeps."""
    from ppo_jax.config import FIELDS

    given = [flag(n) for n in [*FIELDS, *part_overrides(args)] if getattr(args, n, None) is not None]
    given += own
    given += ["--out"] if args.out is not None else []
    given += ["--overwrite"] if args.overwrite else []
    if given:
        raise ConfigError("resume", f"{kept}; remove {', '.join(given)}")


def config_from_args(args: argparse.Namespace, exclude=()) -> PPOConfig:
    """Shipped defaults for `--env`, overridden by every flag given (built-in fields, and the
    fields of the parts the run names, but those in `exclude`)."""
    from ppo_jax.config import FIELDS, default_config

    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    overrides.update({k: v for k, v in part_overrides(args).items() if k not in exclude})
    env = overrides.pop("env", "CartPole-v1")
    return default_config(env, **overrides)


def print_err(message: str) -> None:
    sys.stderr.write(f"ppo-jax: error: {message}\n")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of JAX's multi-process runtime (named as `jax.distributed.initialize` names them)."""
    group = parser.add_argument_group(
        "across hosts",
        "start jax.distributed before any computation; without these flags JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID are read, else SLURM is detected inside an srun step",
    )
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, default=None, metavar="P", help="number of processes")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 <= I < P")
    group.add_argument(
        "--distributed-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="give up if the coordinator cannot be reached within this time (default: 300)",
    )


def start_distributed(args: argparse.Namespace) -> None:
    """Check the multi-process flags (bad input is refused before starting), then start the runtime.

    One process on a CPU-only machine gets one device per core (the run axis is padded to their
    count and sharded over them, see `ppo_jax.runtime.cpu`)."""
    from ppo_jax.runtime.cpu import split_runs_over_cores, usable_cores
    from ppo_jax.runtime.processes import initialize, resolve_processes

    processes = resolve_processes(args.coordinator_address, args.num_processes, args.process_id)
    if processes is None:
        split_runs_over_cores(usable_cores())
    initialize(processes, args.distributed_timeout)


def add_cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile everything afresh (default: compiled programs are kept in $XDG_CACHE_HOME/ppo_jax or "
        "~/.cache/ppo_jax and reused by later runs of the same shapes)",
    )


def use_compile_cache(args: argparse.Namespace) -> None:
    """Turn JAX's persistent compilation cache on unless --no-compile-cache (before any compile)."""
    if not getattr(args, "no_compile_cache", False):
        from ppo_jax.runtime import compile_cache

        compile_cache.enable()


def add_logging_flags(parser: argparse.ArgumentParser, tensorboard: bool = True) -> None:
    """--tensorboard and the --wandb flags (live logging; optional extras)."""
    group = parser.add_argument_group("logging", "curves while the run goes (optional extras)")
    if tensorboard:
        group.add_argument(
            "--tensorboard", action="store_true", help="TensorBoard event files in <out>/tensorboard/seed<N>"
        )
    group.add_argument("--wandb", action="store_true", help="log every seed as a Weights & Biases run")
    group.add_argument("--wandb-project", default="ppo_jax", help="W&B project (default: ppo_jax)")
    group.add_argument("--wandb-entity", default=None, help="W&B entity (default: your default entity)")
    group.add_argument(
        "--wandb-mode",
        choices=("online", "offline"),
        default=None,
        help="default: online when a W&B API key is set up, else offline (runs written under <out>/wandb)",
    )


def loggers_from_args(
    args: argparse.Namespace, tensorboard_subdir: str = "tensorboard", group=None, announce: bool = False
) -> list:
    """The loggers the flags ask for; a missing package is a ConfigError naming the extra. With
    `announce`, W&B choosing offline mode by itself (no API key) is said in one line."""
    from ppo_jax.runtime.loggers import TensorBoardLogger, WandbLogger

    loggers = []
    if getattr(args, "tensorboard", False):
        loggers.append(TensorBoardLogger(tensorboard_subdir))
    if getattr(args, "wandb", False):
        wandb = WandbLogger(args.wandb_project, args.wandb_entity, args.wandb_mode, group)
        if announce and args.wandb_mode is None and wandb.mode == "offline":
            print(
                "W&B: no API key is set up, so runs are logged offline into wandb/ of the output folder "
                "(upload them later with: wandb sync; --wandb-mode online asks for a key)",
                flush=True,
            )
        loggers.append(wandb)
    return loggers


class StderrFilter:
    """sys.stderr without one useless message: when orbax gives up reading a damaged checkpoint,
    tensorstore's reader threads still call back into the event loop orbax has closed, and Python
    prints `RuntimeError: Event loop is closed` with a traceback for each (0 to ~200 of them,
    interleaved with each other and with the command's own error line). The checkpoint error is
    reported in one line already, so exactly the lines of those tracebacks are dropped; every other
    line is written unchanged (lines are assembled per thread)."""

    HEADER = "Traceback (most recent call last):"
    DROPPED = (
        re.compile(r'  File ".*asyncio/base_events\.py", line \d+, in (call_soon_threadsafe|_check_closed)$'),
        re.compile(r"    self\._check_closed\(\)$"),
        re.compile(r"    raise RuntimeError\('Event loop is closed'\)$"),
        re.compile(r"RuntimeError: Event loop is closed$"),
    )

    def __init__(self, stream):
        self.stream = stream
        self.partial: dict[int, str] = {}  # per thread: text after its last newline
        self.headers = 0  # traceback headers held back until the next line shows what follows

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        lines = (self.partial.pop(thread, "") + text).split("\n")
        if lines[-1]:
            self.partial[thread] = lines[-1]
        for line in lines[:-1]:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if line == self.HEADER:
            self.headers += 1
        elif any(pattern.match(line) for pattern in self.DROPPED):
            if "call_soon_threadsafe" in line and self.headers:
                self.headers -= 1  # the header of this traceback
        else:
            self.stream.write(f"{self.HEADER}\n" * self.headers + line + "\n")
            self.headers = 0

    def flush(self) -> None:
        self.stream.write(f"{self.HEADER}\n" * self.headers + "".join(self.partial.values()))
        self.headers, self.partial = 0, {}
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def run_command(args: argparse.Namespace) -> int:
    """Run `args.func(args)`, mapping errors to one line on stderr and an exit code (no traceback):
    2 bad input, 1 files or checkpoints, 3 non-finite training, 130 stopped by a signal."""
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print_err(str(err))
        return 2
    except (OSError, CheckpointError, RunFileError) as err:
        print_err(str(err))
        return 1
    except NonFiniteError as err:
        print_err(str(err))
        return 3
    except RunStopped as err:
        print(str(err))
        return 130
    except KeyboardInterrupt:
        print_err("interrupted")
        return 130
