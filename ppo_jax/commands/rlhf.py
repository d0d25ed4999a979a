"""The `rlhf` command: run the token-level RLHF pipeline, print progress, write rlhf.json and rlhf.png.

`add_rlhf_parser(subparsers)` registers the subcommand on an argparse sub-parser set and
`rlhf_main(args) -> int` runs it; `python -m ppo_jax.commands.rlhf --algo ppo` runs it standalone.
Every `RLHFConfig` field is a flag (`--rl-updates 50`, `--kl-coef 0.1`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from ppo_jax.config import ConfigError
from ppo_jax.rlhf.config import ALGOS, FIELDS, RLHFConfig

PLOT_NAME = "rlhf.png"
RESULT_NAME = "rlhf.json"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--out`, `--quiet` and one flag per `RLHFConfig` field (defaults: the config's)."""
    parser.add_argument("--out", default=None, help="output folder (default: runs/rlhf-<algo>)")
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    defaults = RLHFConfig()
    for name, field in FIELDS.items():
        default = getattr(defaults, name)
        kind = _parse_bool if isinstance(default, bool) else type(default)
        extra: dict[str, Any] = {"choices": ALGOS} if name == "algo" else {}
        parser.add_argument(_flag(name), dest=name, type=kind, default=default, help=field.metadata["help"], **extra)
    return parser


def add_rlhf_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `rlhf` subcommand; its handler is `rlhf_main` (set as the `func` default)."""
    parser = subparsers.add_parser(
        "rlhf",
        help="token-level RLHF: pretrain, reward model, PPO or GRPO fine-tuning",
        description=__doc__.splitlines()[0],
    )
    configure_parser(parser)
    parser.set_defaults(func=rlhf_main)
    return parser


def _format(metrics: dict[str, Any], names: tuple[str, ...]) -> str:
    return "  ".join(f"{name} {float(metrics[name]):.4f}" for name in names if name in metrics)


def make_printer(config: RLHFConfig):
    """A progress callback that prints one line per report (every ~5% of the RL updates)."""
    rl_every = max(1, config.rl_updates // 20)

    def callback(phase: str, step, metrics: dict[str, Any]) -> None:
        step = int(step)
        if phase == "pretrain":
            print(f"[pretrain {step:5d}/{config.pretrain_steps}]  {_format(metrics, ('loss',))}", flush=True)
        elif phase == "reward_model":
            line = _format(metrics, ("loss", "accuracy"))
            print(f"[reward model {step:5d}/{config.rm_steps}]  {line}", flush=True)
        elif step % rl_every == 0 or step == config.rl_updates:
            line = _format(metrics, ("true_reward", "score", "kl", "entropy", "train_approx_kl", "train_clip_frac"))
            print(f"[{config.algo} {step:4d}/{config.rl_updates}]  {line}", flush=True)

    return callback


def result_json(result) -> dict[str, Any]:
    """The JSON document of a run: summary at top level, then samples, timings, config, history."""
    return {
        "algo": result.config.algo,
        **result.summary,
        "samples_before": result.samples_before,
        "samples_after": result.samples_after,
        "timings_s": result.timings,
        "config": result.config.to_dict(),
        "history": {name: np.asarray(values).tolist() for name, values in result.history.items()},
    }


def plot_history(result, path: str) -> None:
    """True and learned reward, and KL to the reference, per RL update (Agg backend)."""
    from ppo_jax.runtime.plots import pyplot

    plt = pyplot()
    history = result.history
    updates = np.arange(1, len(history["true_reward"]) + 1)
    fig, (ax_r, ax_s, ax_kl) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax_r.plot(updates, history["true_reward"], label="true reward (hidden rule)")
    ax_r.axhline(result.summary["true_reward_before"], color="gray", ls="--", label="before RL")
    ax_r.set(xlabel="RL update", ylabel="true reward", ylim=(0, 1.02))
    ax_r.legend(fontsize=8)
    ax_s.plot(updates, history["score"], color="tab:green")
    ax_s.set(xlabel="RL update", ylabel="learned reward (normalised)")
    ax_kl.plot(updates, history["kl"], color="tab:red")
    ax_kl.set(xlabel="RL update", ylabel="KL to reference (nats / completion)")
    fig.suptitle(f"RLHF on the token task: {result.config.algo.upper()}, kl_coef {result.config.kl_coef}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(result, out: str) -> None:
    s = result.summary
    print(f"true reward      {s['true_reward_before']:.3f} -> {s['true_reward_after']:.3f}")
    print(f"learned reward   {s['learned_reward_before']:.3f} -> {s['learned_reward_after']:.3f}")
    print(f"KL to reference  {s['kl_to_reference']:.3f} nats per completion")
    print(f"reward model held-out accuracy {s['reward_model_accuracy']:.3f}")
    for title, rows in (("before", result.samples_before), ("after", result.samples_after)):
        print(f"samples {title}: " + "  ".join(f"{r['prompt']}|{r['completion']}" for r in rows))
    print("time " + "  ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    print(f"wrote {os.path.join(out, RESULT_NAME)} and {os.path.join(out, PLOT_NAME)}")


def rlhf_main(args: argparse.Namespace) -> int:
    """Run the pipeline from parsed arguments; 0 on success, 2 on a bad setting."""
    try:
        config = RLHFConfig(**{name: getattr(args, name) for name in FIELDS})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ppo_jax.rlhf.pipeline import run_rlhf

    out = args.out or os.path.join("runs", f"rlhf-{config.algo}")
    os.makedirs(out, exist_ok=True)
    result = run_rlhf(config, callback=None if args.quiet else make_printer(config))
    with open(os.path.join(out, RESULT_NAME), "w") as f:
        json.dump(result_json(result), f, indent=2)
    plot_history(result, os.path.join(out, PLOT_NAME))
    print_summary(result, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="ppo-jax rlhf", description=__doc__.splitlines()[0]))
    return rlhf_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
