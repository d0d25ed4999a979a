"""Recurrent PPO benchmark: `--network gru` against `--network mlp` on StatelessCartPole-v1.

    python scripts/recurrent_benchmark.py                  # 8 seeds x 1e6 env steps per arm
    python scripts/recurrent_benchmark.py --seeds 2 --total-timesteps 100000 --out /tmp/rb

Both arms use the env's shipped defaults (`ppo_jax.default_config`), the MLP arm with only
`network="mlp"` changed. Each arm is one `ppo-jax train` process (all seeds vmapped in one
program), run one after the other. After each arm finishes, recurrent.json and recurrent.md
are rewritten in --out (default docs/benchmarks/): final return (mean episodic return over
the last 10 % of updates, per seed) as mean ± std, min, IQM over seeds, env-steps/s of the
compiled run (compile excluded; all seeds together) and compile seconds (the compile cache is off, so
every arm compiles). Timings depend on
what else the machine runs; they are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = "StatelessCartPole-v1"
ARMS = ("gru", "mlp")


def iqm(values: list[float]) -> float:
    """Interquartile mean (25 % trimmed from each end, as `ppo_jax.runtime.stats.iqm`)."""
    x = np.sort(np.asarray(values, np.float64))
    k = len(x) // 4
    return float(np.mean(x[k : len(x) - k]))


def train_command(network: str, seeds: int, total_timesteps: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ppo_jax.commands.main",
        "train",
        "--env",
        ENV,
        "--network",
        network,
        "--seeds",
        str(seeds),
        "--total-timesteps",
        str(total_timesteps),
        "--quiet",
        "--overwrite",
        "--no-compile-cache",
        "--out",
        str(out),
    ]


def run_arm(network: str, seeds: int, total_timesteps: int, runs: Path) -> dict:
    out = runs / f"{ENV}-{network}"
    cmd = train_command(network, seeds, total_timesteps, out)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    per_seed = [float(x) for x in summary["final_return_per_seed"]]
    return {
        "network": network,
        "command": " ".join(["ppo-jax", *cmd[3:]]),
        "seeds": seeds,
        "env_steps_per_seed": summary["total_timesteps"],
        "config": json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else None,
        "final_return_per_seed": per_seed,
        "final_return_mean": float(np.mean(per_seed)),
        "final_return_std": float(np.std(per_seed)),
        "final_return_min": float(np.min(per_seed)),
        "final_return_iqm": iqm(per_seed),
        "env_steps_per_second": summary["env_steps_per_second"],
        "compile_seconds": summary["compile_seconds"],
        "command_wall_seconds": wall,
        "params_sha256": summary.get("params_sha256"),
    }


def markdown(results: dict) -> str:
    lines = [
        f"# Recurrent PPO on {ENV}",
        "",
        f"{results['seeds']} seeds x {results['total_timesteps']:,} env steps per seed per arm; the env's shipped "
        "defaults, the MLP arm with `--network mlp` only. Final return: mean episodic return over the last 10 % "
        "of updates of each seed. env-steps/s: all seeds together, compile excluded.",
        "",
        f"Machine: {results['machine']}. Timings are noisy: the CPU cores were shared with other jobs.",
        "",
        "| network | final return mean ± std | min | IQM | env-steps/s | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for arm in results["arms"]:
        lines.append(
            f"| {arm['network']} | {arm['final_return_mean']:.1f} ± {arm['final_return_std']:.1f} | "
            f"{arm['final_return_min']:.1f} | {arm['final_return_iqm']:.1f} | "
            f"{arm['env_steps_per_second']:,.0f} | {arm['compile_seconds']:.1f} |"
        )
    lines += ["", "Per seed:", ""]
    for arm in results["arms"]:
        lines.append(f"- {arm['network']}: " + ", ".join(f"{x:.1f}" for x in arm["final_return_per_seed"]))
    lines += ["", "Commands:", "", "```"]
    lines += [arm["command"] for arm in results["arms"]]
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--total-timesteps", type=int, default=1_000_000)
    p.add_argument("--arms", default=",".join(ARMS), help="comma list of networks, run in this order")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default: <out>/recurrent_runs)")
    args = p.parse_args(argv)
    runs = args.runs or args.out / "recurrent_runs"
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "env": ENV,
        "seeds": args.seeds,
        "total_timesteps": args.total_timesteps,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "arms": [],
    }
    for network in args.arms.split(","):
        results["arms"].append(run_arm(network, args.seeds, args.total_timesteps, runs))
        (args.out / "recurrent.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "recurrent.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
