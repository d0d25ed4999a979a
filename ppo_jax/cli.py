"""The `ppo-jax` command: the only place that prints or writes files."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from ppo_jax.config import ENV_DEFAULTS, FIELDS, ConfigError, PPOConfig, default_config


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _typed(name: str, kind: type):
    def parse(text: str):
        try:
            if kind is tuple:
                values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
                if not values:
                    raise ValueError
                return values
            return kind(text)
        except ValueError:
            want = {int: "an integer", float: "a number", tuple: "comma-separated integers, e.g. 64,64"}[kind]
            raise argparse.ArgumentTypeError(f"{_flag(name)} expects {want}, got {text!r}") from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `PPOConfig` field, generated from the dataclass (help text and defaults)."""
    base = PPOConfig()
    group = parser.add_argument_group(
        "config",
        f"every PPOConfig field; defaults shown for CartPole-v1, per-env defaults for {len(ENV_DEFAULTS)} envs",
    )
    for name, field in FIELDS.items():
        default = getattr(base, name)
        kind = {bool: bool, int: int, float: float, str: str, tuple: tuple}[type(default)]
        tag = "traced" if field.metadata["traced"] else "static"
        shown = ",".join(map(str, default)) if kind is tuple else default
        help_text = f"{field.metadata['help']} ({tag}; default: {shown})"
        if kind is bool:
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is str:
            group.add_argument(_flag(name), default=None, help=help_text, metavar="NAME" if name == "env" else None)
        else:
            group.add_argument(
                _flag(name), type=_typed(name, kind), default=None, help=help_text, metavar=kind.__name__.upper()
            )


def config_from_args(args: argparse.Namespace) -> PPOConfig:
    """Shipped defaults for `--env`, overridden by every flag given."""
    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    env = overrides.pop("env", "CartPole-v1")
    return default_config(env, **overrides)


class Progress:
    """Host callback: one live line with env steps done/total, env-steps/s and the latest return."""

    def __init__(self, total_steps: int, num_runs: int, stream=sys.stderr, min_interval: float = 0.2):
        self.total = total_steps
        self.num_runs = num_runs
        self.stream = stream
        self.live = stream.isatty()
        self.min_interval = min_interval if self.live else 5.0
        self.start: float | None = None  # time and step count at the first update: rate excludes it
        self.start_steps = 0
        self.last_print = 0.0
        self.last_return = math.nan
        self.steps = 0

    def __call__(self, update, metrics) -> None:
        now = time.perf_counter()
        steps = np.asarray(metrics["env_steps"])
        self.steps = int(steps.sum()) if steps.ndim else int(steps) * self.num_runs
        if self.start is None:
            self.start, self.start_steps = now, self.steps
        ret = np.asarray(metrics["episode_return"], np.float64)
        if np.isfinite(ret).any():
            self.last_return = float(np.nanmean(ret))
        if now - self.last_print >= self.min_interval or self.steps >= self.total:
            self.last_print = now
            self.show(now)

    def show(self, now: float) -> None:
        elapsed = now - (self.start or now)
        rate = (self.steps - self.start_steps) / elapsed if elapsed > 0 else 0.0
        line = (
            f"steps {self.steps:>12,}/{self.total:,} ({100 * self.steps / self.total:5.1f}%)"
            f" | {rate:>10,.0f} steps/s | return {self.last_return:8.2f}"
        )
        end = "\r" if self.live and self.steps < self.total else "\n"
        self.stream.write(line + end)
        self.stream.flush()


def _print_err(message: str) -> None:
    sys.stderr.write(f"ppo-jax: error: {message}\n")


def cmd_train(args: argparse.Namespace) -> int:
    import jax

    from ppo_jax import runs
    from ppo_jax.train import METRIC_NAMES, make_train_batch

    config = config_from_args(args)
    if args.seeds < 1:
        raise ConfigError("seeds", f"must be a positive integer, got {args.seeds}")
    seeds = [config.seed + i for i in range(args.seeds)]
    out = runs.prepare_dir(args.out or runs.default_run_dir(config.env))
    progress = Progress(config.env_steps * len(seeds), len(seeds)) if not args.quiet else None
    train = make_train_batch(config, callback=progress)  # resolves the env: errors before compiling
    runs.write_json(out / "config.json", {**config.to_dict(), "seeds": seeds})
    print(f"training {config.env}: {len(seeds)} seed(s) x {config.env_steps:,} steps -> {out}")

    keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0

    metrics = {n: np.asarray(result.metrics[n]) for n in METRIC_NAMES}
    per_seed = runs.final_returns(metrics["episode_return"])
    total_steps = config.env_steps * len(seeds)
    summary = {
        "env": config.env,
        "seeds": seeds,
        "total_timesteps": config.env_steps,
        "num_updates": config.num_updates,
        "final_return_mean": float(np.nanmean(per_seed)) if np.isfinite(per_seed).any() else math.nan,
        "final_return_std": float(np.nanstd(per_seed)) if np.isfinite(per_seed).any() else math.nan,
        "final_return_min": float(np.nanmin(per_seed)) if np.isfinite(per_seed).any() else math.nan,
        "final_return_max": float(np.nanmax(per_seed)) if np.isfinite(per_seed).any() else math.nan,
        "final_return_per_seed": per_seed.tolist(),
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "env_steps_per_second": total_steps / run_s,
        "params_sha256": runs.params_sha256(result.state.params),
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
    }
    runs.write_metrics_csv(out / "metrics.csv", metrics, seeds)
    runs.write_json(out / "summary.json", summary)
    runs.plot_curve(out / "curve.png", metrics["env_steps"], metrics["episode_return"], seeds, config.env)
    spread = f" ± {summary['final_return_std']:.1f} (min {summary['final_return_min']:.1f})" if len(seeds) > 1 else ""
    print(
        f"final return {summary['final_return_mean']:.2f}{spread} | compile {compile_s:.1f} s | "
        f"run {run_s:.1f} s | {summary['env_steps_per_second']:,.0f} env-steps/s\nrun folder: {out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-jax", description="Pure-functional PPO in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train PPO on a gymnax environment (CartPole-v1 by default)",
        description="Train PPO; every config field is a flag. Writes config.json, metrics.csv, "
        "summary.json and curve.png to the run folder.",
    )
    add_config_flags(train)
    train.add_argument("--seeds", type=int, default=1, help="number of seeds trained together with jax.vmap")
    train.add_argument("--out", default=None, help="run folder (default: runs/<env>-<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no live progress line")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        _print_err(str(err))
        return 2
    except OSError as err:
        _print_err(str(err))
        return 1
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
