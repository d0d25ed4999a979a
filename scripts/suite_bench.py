"""Env-steps/s and compile time of `ppo-jax train` on each installed environment suite.

    python scripts/suite_bench.py                      # every installed suite, small budgets
    python scripts/suite_bench.py --only craftax --json suites.json

Each row runs the real command (`ppo-jax train --env SUITE/NAME ... --no-compile-cache --quiet`)
in a fresh process at a small budget and reads `compile_seconds`, `run_seconds` and
`env_steps_per_second` from its summary.json. Craftax-Classic-Symbolic runs with both the `mlp`
and the `gru` family. Suites whose package is missing are listed as skipped. Budgets and sizes are
for a CPU; pass --scale to multiply every budget (e.g. on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (suite package, env id, extra flags); budgets small enough for 2 CPU cores
ROWS = [
    ("navix", "navix/Navix-Empty-5x5-v0", ["--num-envs", "16", "--num-steps", "64", "--total-timesteps", "65536"]),
    (
        "xminigrid",
        "xminigrid/MiniGrid-Empty-5x5",
        ["--num-envs", "16", "--num-steps", "64", "--total-timesteps", "65536"],
    ),
    ("jumanji", "jumanji/Snake-v1", ["--num-envs", "16", "--num-steps", "64", "--total-timesteps", "65536"]),
    (
        "craftax",
        "craftax/Craftax-Classic-Symbolic-v1",
        ["--num-envs", "64", "--num-steps", "64", "--total-timesteps", "65536", "--network", "mlp"],
    ),
    (
        "craftax",
        "craftax/Craftax-Classic-Symbolic-v1",
        ["--num-envs", "64", "--num-steps", "64", "--total-timesteps", "65536", "--network", "gru"],
    ),
    ("brax", "brax/inverted_pendulum", ["--num-envs", "16", "--num-steps", "64", "--total-timesteps", "16384"]),
    ("brax", "brax/ant", ["--num-envs", "16", "--num-steps", "32", "--total-timesteps", "4096"]),
    (
        "mujoco_playground",
        "playground/CartpoleBalance",
        ["--num-envs", "16", "--num-steps", "32", "--total-timesteps", "4096"],
    ),
]
SMALL_NET = ["--hidden-sizes", "64,64", "--num-minibatches", "4", "--num-epochs", "2"]


def run_row(env: str, flags: list[str], scale: float, out: Path, timeout: float) -> dict:
    """One `ppo-jax train` in its own process; the summary's timing fields."""
    flags = list(flags)
    i = flags.index("--total-timesteps") + 1
    flags[i] = str(int(int(flags[i]) * scale))
    cmd = [sys.executable, "-m", "ppo_jax.commands.main", "train", "--env", env, *SMALL_NET, *flags]
    cmd += ["--out", str(out), "--overwrite", "--quiet", "--no-compile-cache"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"env": env, "flags": flags, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads((out / "summary.json").read_text())
    return {
        "env": env,
        "flags": flags,
        "env_steps": summary["total_timesteps"],
        "compile_s": round(summary["compile_seconds"], 1),
        "run_s": round(summary["run_seconds"], 2),
        "env_steps_per_s": round(summary["env_steps_per_second"]),
        "final_return": summary["final_return_mean"],
        "command_wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated suite packages (default: all installed)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per row")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (package, env, flags) in enumerate(ROWS):
            if only and package not in only:
                continue
            if importlib.util.find_spec(package) is None:
                row = {"env": env, "skipped": f"{package} not installed"}
            else:
                try:
                    row = run_row(env, flags, args.scale, Path(tmp) / f"run{n}", args.timeout)
                except subprocess.TimeoutExpired:
                    row = {"env": env, "flags": flags, "error": f"over {args.timeout:.0f} s"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
