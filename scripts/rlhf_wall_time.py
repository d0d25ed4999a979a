"""Wall time of the default `ppo-jax rlhf`, exactly as a user types it (progress on).

    python scripts/rlhf_wall_time.py [--base CHECKOUT] [--repeats 3] [--out docs/benchmarks/rlhf_wall_time]

Each repeat runs `ppo-jax rlhf --out RUN` with a fresh compile cache (first run) and with a warm
one (repeat), for this checkout and, alternating, for `--base` (an older checkout, run with its own
`ppo_jax` on PYTHONPATH). Per run: wall seconds from the process's start to its end, CPU seconds
(user + system), the phases the command records in `rlhf.json` (`wall_seconds`: pretraining and
RL, each with its compiles), the rest (interpreter, imports, evaluation set-up, files, exit) as the
difference, and the held-out accuracy before and after. Medians go to OUT.json and OUT.md; each
run to OUT.runs.jsonl as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

FIELDS = ("seconds", "cpu_seconds", "pretrain", "rl", "rest", "accuracy_before", "accuracy_after")


def run_once(tree: Path, cache: Path, run: Path, log: Path) -> dict:
    """One `ppo-jax rlhf --out run` with XDG_CACHE_HOME=cache: its times and accuracies."""
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(cache)}
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("a") as f:
        rc = subprocess.run(
            ["ppo-jax", "rlhf", "--out", str(run)], env=env, stdout=f, stderr=subprocess.STDOUT
        ).returncode
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "rc": rc,
    }
    if rc == 0:
        record = json.loads((run / "rlhf.json").read_text())
        phases = record["wall_seconds"]
        row.update(
            pretrain=phases["pretrain"],
            rl=phases["rl"],
            rest=row["seconds"] - phases["pretrain"] - phases["rl"],
            accuracy_before=record["accuracy_before"],
            accuracy_after=record["accuracy_after"],
            compile_cache_hit=record.get("compile_cache_hit"),
        )
    return row


def medians(rows: list[dict]) -> dict:
    """Per (tree, cache): the median of each field over the repeats that finished."""
    out: dict = {}
    for row in rows:
        out.setdefault(f"{row['tree']} {row['cache']}", []).append(row)
    return {
        key: {f: statistics.median(r[f] for r in group if f in r) for f in FIELDS if any(f in r for r in group)}
        | {"runs": len(group)}
        for key, group in out.items()
    }


def write_table(path: Path, table: dict, rows: list[dict], machine: str) -> None:
    """OUT.md: the medians and every run's wall seconds."""
    lines = [
        f"Default `ppo-jax rlhf`, progress on; medians over alternating runs; {machine}.",
        "",
        "| checkout | compile cache | wall s | CPU s | pretraining s | RL s | rest s | accuracy before → after "
        "| runs (wall s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in table.items():
        tree, cache = key.split()
        runs = ", ".join(f"{r['seconds']:.1f}" for r in rows if r["tree"] == tree and r["cache"] == cache)
        lines.append(
            f"| {tree} | {cache} | {m['seconds']:.1f} | {m['cpu_seconds']:.1f} | {m.get('pretrain', 0):.1f} | "
            f"{m.get('rl', 0):.1f} | {m.get('rest', 0):.1f} | {m.get('accuracy_before', 0):.3f} → "
            f"{m.get('accuracy_after', 0):.3f} | {runs} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="an older checkout of ppo_jax to time in the same alternation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--machine", default="2 CPU cores")
    p.add_argument("--out", default="docs/benchmarks/rlhf_wall_time")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trees = [("this", Path(__file__).resolve().parents[1])] + (
        [("base", Path(args.base).resolve())] if args.base else []
    )
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-wall-"))
    runs_file = out.with_suffix(".runs.jsonl")
    runs_file.write_text("")
    rows: list[dict] = []
    for label, tree in trees:  # the warm cache of the repeats: one run, not recorded
        run_once(tree, tmp / f"{label}-warm", tmp / f"{label}-prime", tmp / "log.txt")
    for i in range(args.repeats):
        for label, tree in trees:
            for cache_kind in ("first", "repeat"):
                cache = tmp / f"{label}-cache-{i}" if cache_kind == "first" else tmp / f"{label}-warm"
                row = {"tree": label, "cache": cache_kind, "repeat": i}
                row |= run_once(tree, cache, tmp / f"{label}-{cache_kind}-{i}", tmp / "log.txt")
                rows.append(row)
                with runs_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    table = medians(rows)
    out.with_suffix(".json").write_text(json.dumps({"machine": args.machine, "medians": table}, indent=2) + "\n")
    write_table(out.with_suffix(".md"), table, rows, args.machine)


if __name__ == "__main__":
    main()
