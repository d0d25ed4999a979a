"""Alternating A/B runs of `scripts/throughput.py` over source trees (and the plain path).

    python scripts/fast_paths_ab.py --rounds 5 --out runs.jsonl \\
        --variant main=/tmp/wt-main --variant fast=. --variant plain=.:plain --variant old=/tmp/wt-old

Every round runs each variant once, in an order rotated by one per round, each in a fresh
process with `PYTHONPATH` set to its tree (`:plain` adds `--no-fast-paths`); one JSON line per
(variant, seed count) is appended to `--out` as it finishes. `--summary` prints the medians and
ranges of env-steps/s and compile seconds per variant and seed count as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).with_name("throughput.py")


def run_variant(name: str, spec: str, seeds: str, budgets: str, round_index: int) -> list[dict]:
    """One throughput.py process for variant `name` (`tree` or `tree:plain`); its rows, labelled."""
    tree, _, mode = spec.partition(":")
    tree = str(Path(tree).resolve())
    commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(SCRIPT), "--seeds", seeds, "--total-timesteps", budgets, "--json", str(out)]
        cmd += ["--no-fast-paths"] if mode == "plain" else []
        env = {**os.environ, "PYTHONPATH": tree}
        subprocess.run(cmd, env=env, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        rows = json.loads(out.read_text())
    label = {"variant": name, "tree": tree, "commit": commit.stdout.strip(), "round": round_index}
    return [{**label, **row} for row in rows]


def summary(path: Path) -> str:
    """Markdown table: per variant and seed count, median and range of env-steps/s and compile s."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        "| variant | commit | seeds | runs | env-steps/s median | range | compile s median | range |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    keys = sorted({(r["variant"], r["seeds"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for variant, seeds in keys:
        sel = [r for r in rows if r["variant"] == variant and r["seeds"] == seeds]
        speed = np.array([r["env_steps_per_second"] for r in sel])
        comp = np.array([r["compile_seconds"] for r in sel])
        commits = ",".join(sorted({r["commit"] for r in sel}))
        lines.append(
            f"| {variant} | {commits} | {seeds} | {len(sel)} | {np.median(speed):,.0f} | "
            f"{speed.min():,.0f} – {speed.max():,.0f} | {np.median(comp):.1f} | {comp.min():.1f} – {comp.max():.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=TREE or NAME=TREE:plain")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", default="1,32")
    parser.add_argument("--total-timesteps", default="500000,50000", help="per seed, one per seed count")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.summary:
        print(summary(args.out))
        return
    variants = [v.split("=", 1) for v in args.variant]
    for r in range(args.rounds):
        shift = r % len(variants)
        for name, spec in variants[shift:] + variants[:shift]:
            rows = run_variant(name, spec, args.seeds, args.total_timesteps, r)
            with args.out.open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            print(f"round {r} {name}: " + ", ".join(f"{x['env_steps_per_second']:,.0f}" for x in rows), flush=True)
    print(summary(args.out))


if __name__ == "__main__":
    main()
