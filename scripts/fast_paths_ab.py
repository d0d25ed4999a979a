"""Alternating A/B runs of `scripts/throughput.py` over source trees (and the plain path).

    python scripts/fast_paths_ab.py --rounds 5 --out runs.jsonl \\
        --variant main=/tmp/wt-main --variant fast=. --variant plain=.:plain --variant old=/tmp/wt-old

Every round runs each variant once, in an order rotated by one per round, each in a fresh
process with `PYTHONPATH` set to its tree (`:plain` adds `--no-fast-paths`); one JSON line per
(variant, seed count) is appended to `--out` as it finishes. `--summary` prints the medians and
ranges of env-steps/s and compile seconds per variant and seed count as a Markdown table, with
each variant's ratio to `--reference` in the same round (rounds read off the file's order).
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


def rounds_of(rows: list[dict]) -> list[int]:
    """Round number of each row in file order: a round ends when a (variant, seeds) repeats."""
    out, seen, index = [], set(), 0
    for row in rows:
        key = (row["variant"], row["seeds"])
        if key in seen:
            index, seen = index + 1, set()
        seen.add(key)
        out.append(index)
    return out


def paired_ratio(rows: list[dict], variant: str, reference: str, seeds: int) -> np.ndarray:
    """env-steps/s of `variant` over `reference`'s in the same round, one ratio per round."""
    by_round: dict[tuple[int, str], float] = {}
    for r, row in zip(rounds_of(rows), rows, strict=True):
        if row["seeds"] == seeds:
            by_round[(r, row["variant"])] = row["env_steps_per_second"]
    pairs = [(v, by_round.get((r, reference))) for (r, name), v in by_round.items() if name == variant]
    return np.array([v / ref for v, ref in pairs if ref])


def summary(path: Path, reference: str = "branch") -> str:
    """Markdown table: per variant and seed count, median and range of env-steps/s, the median
    (range) of its ratio to `reference` in the same round, and compile seconds of the first run
    (cold, unless the program was in the cache already) and of the later ones."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        f"| variant | commit | seeds | runs | env-steps/s median | range | / {reference}, same round: median (range) "
        "| compile s: first run | later runs median (range) |",
        "|---|---|---:|---:|---:|---|---|---:|---|",
    ]
    keys = sorted({(r["variant"], r["seeds"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for variant, seeds in keys:
        sel = [r for r in rows if r["variant"] == variant and r["seeds"] == seeds]
        speed = np.array([r["env_steps_per_second"] for r in sel])
        comp = np.array([r["compile_seconds"] for r in sel])
        commits = ",".join(sorted({r["commit"] for r in sel}))
        ratio = paired_ratio(rows, variant, reference, seeds)
        ratio_text = f"{np.median(ratio):.2f} ({ratio.min():.2f} – {ratio.max():.2f})" if ratio.size else "–"
        lines.append(
            f"| {variant} | {commits} | {seeds} | {len(sel)} | {np.median(speed):,.0f} | "
            f"{speed.min():,.0f} – {speed.max():,.0f} | {ratio_text} | {comp[0]:.1f} | "
            f"{np.median(comp[1:]):.1f} ({comp[1:].min():.1f} – {comp[1:].max():.1f}) |"
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
    parser.add_argument("--reference", default="branch", help="the variant the ratios divide by")
    args = parser.parse_args()
    if args.summary:
        print(summary(args.out, args.reference))
        return
    variants = [v.split("=", 1) for v in args.variant]
    for r in range(args.rounds):
        shift = r % len(variants)
        for name, spec in variants[shift:] + variants[:shift]:
            rows = run_variant(name, spec, args.seeds, args.total_timesteps, r)
            with args.out.open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            print(f"round {r} {name}: " + ", ".join(f"{x['env_steps_per_second']:,.0f}" for x in rows), flush=True)
    print(summary(args.out, args.reference))


if __name__ == "__main__":
    main()
