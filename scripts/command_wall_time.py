"""Wall time of the commands exactly as a user types them, alternating with PureJaxRL's `ppo.py`.

    python scripts/command_wall_time.py --pjr-dir PUREJAXRL/purejaxrl --pjr-python VENV/bin/python \
        [--base CHECKOUT] [--repeats 3] [--out docs/benchmarks/command_wall_time]

Each repeat runs, in this order, for this checkout (and for `--base`, an older checkout, run with
its own `ppo_jax` on PYTHONPATH): `ppo-jax train` and `ppo-jax eval RUN --episodes 100` with a
fresh compile cache (first run) and with a warm one (repeat), then `ppo-jax train` with
PureJaxRL's CartPole config pinned, fresh and warm; then PureJaxRL's `python ppo.py` as shipped
(CartPole-v1, 5e5 steps, its own compile; it has no persistent cache). Progress line on, no
--quiet: output goes to a file, so the line is written every 5 s instead of being redrawn. Every
command is timed from its start to its process's end (wall seconds) and by the CPU time it used
(user + system: less sensitive to other jobs on a shared machine). Medians over the repeats and
ratios to PureJaxRL's median go to OUT.json and OUT.md; each run to OUT.runs.jsonl as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PINNED = [
    "--num-envs", "4", "--num-steps", "128", "--num-minibatches", "4", "--num-epochs", "4",
    "--total-timesteps", "500000", "--lr", "2.5e-4",
]  # fmt: skip
COMMANDS = ("train", "eval", "train pinned")


def timed(argv: list[str], env: dict, cwd: str | None, log: Path) -> tuple[float, int, float]:
    """(wall seconds, exit code, CPU seconds: user + system of the process and its children)."""
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("a") as f:
        rc = subprocess.run(argv, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, rc, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def run_tree(label: str, tree: Path, tmp: Path, i: int, record) -> None:
    """First runs (fresh cache) and repeats (the warm cache) of the three commands of one checkout."""
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
    for cache_kind in ("first", "repeat"):
        cache = tmp / f"{label}-cache-{i}" if cache_kind == "first" else tmp / f"{label}-warm"
        env_c = {**env, "XDG_CACHE_HOME": str(cache)}
        run = tmp / f"{label}-{cache_kind}-{i}"
        for command, argv in (
            ("train", ["ppo-jax", "train", "--out", str(run)]),
            ("eval", ["ppo-jax", "eval", str(run), "--episodes", "100"]),
            ("train pinned", ["ppo-jax", "train", *PINNED, "--out", f"{run}-pinned"]),
        ):
            seconds, rc, cpu = timed(argv, env_c, None, tmp / "log.txt")
            extra = {}
            if command == "eval" and rc == 0:
                extra["eval_return"] = json.loads((run / "eval.json").read_text())["return_mean"]
            if command.startswith("train") and rc == 0:
                out = run if command == "train" else Path(f"{run}-pinned")
                summary = json.loads((out / "summary.json").read_text())
                extra = {k: summary[k] for k in ("compile_seconds", "run_seconds", "compile_cache_hit")}
            record(
                {
                    "tree": label,
                    "command": command,
                    "cache": cache_kind,
                    "repeat": i,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "rc": rc,
                    **extra,
                }
            )


def prime(label: str, tree: Path, tmp: Path) -> None:
    """Fill the warm cache of a checkout once (its programs are those the repeats load)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(tmp / f"{label}-warm")}
    run = tmp / f"{label}-prime"
    for argv in (
        ["ppo-jax", "train", "--out", str(run)],
        ["ppo-jax", "eval", str(run), "--episodes", "100"],
        ["ppo-jax", "train", *PINNED, "--out", f"{run}-pinned"],
    ):
        timed(argv, env, None, tmp / "log.txt")


def summarize(rows: list[dict], metric: str = "seconds") -> dict:
    """Medians of `metric` (wall or CPU seconds) per checkout, command and cache, with ratios to
    PureJaxRL's median and the sum of train and eval."""
    pjr = [r[metric] for r in rows if r["tree"] == "purejaxrl" and r["rc"] == 0]
    ref = statistics.median(pjr) if pjr else float("nan")
    table = {"purejaxrl": {"median_s": ref, "runs": len(pjr), "all_s": pjr}}
    for r in rows:
        if r["tree"] != "purejaxrl":
            table.setdefault(f"{r['tree']} | {r['command']} | {r['cache']}", {"all_s": []})["all_s"].append(r[metric])
    for key, entry in table.items():
        if key != "purejaxrl":
            entry.update(median_s=statistics.median(entry["all_s"]), runs=len(entry["all_s"]))
            entry["ratio_to_purejaxrl"] = entry["median_s"] / ref
    for tree in sorted({r["tree"] for r in rows} - {"purejaxrl"}):
        for cache in ("first", "repeat"):
            pair = [table.get(f"{tree} | {c} | {cache}", {}).get("median_s") for c in ("train", "eval")]
            if None not in pair:
                table[f"{tree} | train + eval | {cache}"] = {
                    "median_s": sum(pair),
                    "ratio_to_purejaxrl": sum(pair) / ref,
                }
    return table


def markdown(tables: dict, rows: list[dict], machine: str) -> str:
    lines = [f"Medians over alternating runs; {machine}."]
    for metric, table in tables.items():
        lines += [
            "",
            f"{metric}:",
            "",
            "| checkout | command | compile cache | median | × PureJaxRL | runs |",
            "|---|---|---|---|---|---|",
        ]
        for key, e in table.items():
            if key != "purejaxrl":
                tree, command, cache = key.split(" | ")
                runs = ", ".join(f"{v:.1f}" for v in e.get("all_s", []))
                ratio = e["ratio_to_purejaxrl"]
                lines.append(f"| {tree} | {command} | {cache} | {e['median_s']:.2f} | {ratio:.2f} | {runs} |")
        p = table["purejaxrl"]
        runs = ", ".join(f"{v:.1f}" for v in p["all_s"])
        lines.append(f"| PureJaxRL | `python ppo.py` | (none) | {p['median_s']:.2f} | 1.00 | {runs} |")
    returns = [r["eval_return"] for r in rows if "eval_return" in r]
    if returns:
        lines += ["", f"Deterministic eval return of every trained run: min {min(returns):.1f} over {len(returns)}."]
    hits = [(r["tree"], r["command"], r["cache"], r["compile_cache_hit"]) for r in rows if "compile_cache_hit" in r]
    if hits:
        wrong = [h for h in hits if h[3] != (h[2] == "repeat")]
        lines += [f"`compile_cache_hit` false on every first run and true on every repeat: {not wrong} {wrong or ''}"]
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict], machine: str) -> None:
    tables = {"wall seconds": summarize(rows), "CPU seconds (user + system)": summarize(rows, "cpu_seconds")}
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "tables": tables}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(tables, rows, machine))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pjr-dir", required=True, help="PureJaxRL's purejaxrl/ folder (ppo.py, wrappers.py)")
    p.add_argument("--pjr-python", required=True, help="the Python of PureJaxRL's own virtual environment")
    p.add_argument("--base", default=None, help="an older checkout of ppo_jax to time in the same alternation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--machine", default="2 shared CPU cores, other jobs running: noisy (±25 % and more)")
    p.add_argument("--out", default="docs/benchmarks/command_wall_time")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trees = [("this", Path(__file__).resolve().parents[1])] + (
        [("base", Path(args.base).resolve())] if args.base else []
    )
    tmp = Path(tempfile.mkdtemp(prefix="wall-"))
    rows: list[dict] = []
    runs_file = out.with_suffix(".runs.jsonl")
    runs_file.write_text("")

    def record(row: dict) -> None:
        rows.append(row)
        with runs_file.open("a") as f:
            f.write(json.dumps(row) + "\n")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the table of the runs so far is written
    try:
        for label, tree in trees:
            prime(label, tree, tmp)
        pjr_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        pjr_env.pop("PYTHONPATH", None)
        for i in range(args.repeats):
            for label, tree in trees:
                run_tree(label, tree, tmp, i, record)
            seconds, rc, cpu = timed([args.pjr_python, "ppo.py"], pjr_env, args.pjr_dir, tmp / "pjr-log.txt")
            record(
                {
                    "tree": "purejaxrl",
                    "command": "python ppo.py",
                    "cache": "none",
                    "repeat": i,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "rc": rc,
                }
            )
    finally:
        write(out, rows, args.machine)
        shutil.rmtree(tmp, ignore_errors=True)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
