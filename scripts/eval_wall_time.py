"""Wall time of `ppo-jax eval RUN` on a repeat, exactly as a user types it (progress line on, no
--quiet), alternating this checkout with another one.

    python scripts/eval_wall_time.py RUN --base CHECKOUT [--repeats 5] [--out runs.jsonl]

Each checkout runs with its own `ppo_jax` on PYTHONPATH and its own compile cache (a fresh
XDG_CACHE_HOME, warmed by one untimed evaluation first), so every timed run is a repeat. Each run
is timed from its start to its process's end (wall seconds) and by the CPU time it used (user +
system); the 1-minute load average is read before it. Every run's eval.json must be the same as the
first one's (same returns, bit for bit). Each repeat also times the floor: `python -c pass` and
`python -c "import jax; jax.numpy.zeros(1)"`. One JSON object per run goes to --out after each
repeat; medians are printed as a Markdown table.
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

# The floor: starting Python, and starting it with JAX imported and one computation run.
FLOOR = {"python -c pass": ["python", "-c", "pass"], "import jax": ["python", "-c", "import jax; jax.numpy.zeros(1)"]}


def timed(argv: list[str], env: dict) -> dict:
    load = os.getloadavg()[0]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return {"wall": wall, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "load1": load}


def timed_eval(run: Path, tree: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": str(cache)}
    record = timed(["ppo-jax", "eval", str(run)], env)
    return {**record, "eval": json.loads((run / "eval.json").read_text())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished run folder (ppo-jax train --out RUN)")
    p.add_argument("--base", type=Path, required=True, help="the checkout to compare with (its ppo_jax on PYTHONPATH)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="append one JSON object per run here")
    args = p.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"before": args.base.resolve(), "after": here}
    tmp = Path(tempfile.mkdtemp(prefix="eval-wall-"))
    caches = {label: tmp / label for label in trees}
    warm = [timed_eval(args.run, tree, caches[label])["eval"] for label, tree in trees.items()]
    reference = warm[0]  # each checkout's cache is warm now: every timed run is a repeat
    runs = []
    for i in range(args.repeats):
        for label, tree in trees.items():
            record = {"label": label, "repeat": i, **timed_eval(args.run, tree, caches[label])}
            if record["eval"] != reference:
                raise SystemExit(f"{label} run {i}: eval.json differs from the first run's")
            runs.append(record)
        runs += [{"label": label, "repeat": i, **timed(argv, dict(os.environ))} for label, argv in FLOOR.items()]
        if args.out:
            with args.out.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in runs if r["repeat"] == i)
    print("| checkout | median wall s | runs (wall s) | median CPU s | load average (1 min) |")
    print("|---|---|---|---|---|")
    for label in [*trees, *FLOOR]:
        mine = [r for r in runs if r["label"] == label]
        walls = ", ".join(f"{r['wall']:.2f}" for r in mine)
        loads = [r["load1"] for r in mine]
        print(
            f"| {label} | {statistics.median(r['wall'] for r in mine):.2f} | {walls} | "
            f"{statistics.median(r['cpu'] for r in mine):.2f} | {min(loads):.2f}–{max(loads):.2f} |"
        )
    print(f"eval.json the same in every run: return_mean {reference['return_mean']}")


if __name__ == "__main__":
    main()
