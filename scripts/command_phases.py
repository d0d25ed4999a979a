"""Where the wall time of one `ppo-jax` command goes, phase by phase.

    python scripts/command_phases.py [--json OUT.jsonl --label NAME] -- train --out /tmp/run
    python scripts/command_phases.py -- eval /tmp/run --episodes 100
    python scripts/command_phases.py --table OUT.jsonl     (medians per label and command, Markdown)
    python scripts/command_phases.py --timeline -- rlhf --out /tmp/run   (and each compile, listed)

The command runs in a child process exactly as `ppo-jax ARGS` would (the same `main`), with
timers around its phases: interpreter start, imports (the modules the command imports), planning
(`plan_run`; for eval, finding and loading the program an earlier evaluation kept), tracing,
lowering to StableHLO, XLA compile or persistent-cache load (JAX's own duration events, summed
over threads: a program compiled in a thread while another phase runs is counted here and there),
running (the driver's `run_seconds`; for eval, what is left of the command: the evaluation itself,
mostly, and on a first run restoring the policies), writing files (policy export, metrics,
summary, plot, checkpoints) and exit (from the end of `main` to the process's end as the parent
sees it). One JSON object per run goes to --json (appended) and one line to stdout. With
--timeline, every backend compile (or persistent-cache load) of 0.1 s or more is listed too: start
and end in seconds since launch, duration, thread and jitted function (an empty XDG_CACHE_HOME
shows a first run).
The floor is what the command would take if it only started, imported, loaded its programs from
the cache and ran: interpreter + imports + cache load + running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "tracing",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering",
    "/jax/core/compile/backend_compile_duration": "compile_or_load",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load",
}
IMPORTS = {
    "train": ("ppo_jax.runtime.driver", "ppo_jax.runtime.planning", "ppo_jax.commands.progress"),
    "eval": ("ppo_jax.commands.evaluate", "ppo_jax.runtime.eval_program"),  # a repeat needs no more
}


def _timed(phases: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.time() - t0

    return wrapper


def child(out: str, argv: list[str]) -> None:
    launch = float(os.environ["PHASES_LAUNCH"])
    top = time.time()
    phases: dict = {"interpreter": top - launch}
    import importlib

    import jax.monitoring

    from ppo_jax.commands import main as cli

    for module in IMPORTS.get(argv[0], ()):
        importlib.import_module(module)
    phases["imports"] = time.time() - top
    counts = {"programs_compiled_or_loaded": 0, "cache_hits": 0}
    compiles: list = []  # [start, end, thread, function] of each backend compile, s since launch

    def on_duration(event, seconds, **kwargs):
        if event in EVENTS:
            phases[EVENTS[event]] = phases.get(EVENTS[event], 0.0) + seconds
        if event == "/jax/core/compile/backend_compile_duration":
            counts["programs_compiled_or_loaded"] += 1
            end = time.time() - launch
            compiles.append([end - seconds, end, threading.current_thread().name, kwargs.get("fun_name", "")])

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            counts["cache_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    if argv[0] == "train":
        from ppo_jax.runtime import driver, planning

        planning.plan_run = _timed(phases, "planning", planning.plan_run)
        driver._finish = _timed(phases, "writing_files", driver._finish)
    elif argv[0] == "eval":  # planning: finding and loading the kept program (the rest is "running")
        from ppo_jax.runtime import eval_program, files

        eval_program.load_program = _timed(phases, "planning", eval_program.load_program)
        files.write_json = _timed(phases, "writing_files", files.write_json)
    start = time.time()

    def record(code: int) -> None:
        end = time.time()
        phases["command"] = end - start
        if argv[0] == "train" and code == 0:
            summary = json.loads(open(os.path.join(argv[argv.index("--out") + 1], "summary.json")).read())
            phases["running"] = summary["run_seconds"]
            phases["writing_files"] = phases.get("writing_files", 0.0) + summary["checkpoint_seconds"]
            phases["compile_cache_hit"] = summary["compile_cache_hit"]
        if argv[0] == "eval":  # running: what is left of the command (the evaluation program, mostly)
            known = ("planning", "tracing", "lowering", "compile_or_load", "writing_files")
            phases["running"] = max(0.0, phases["command"] - sum(phases.get(k, 0.0) for k in known))
        with open(out, "w") as f:
            json.dump({"argv": argv, "rc": code, "end": end - launch, **counts, **phases, "compiles": compiles}, f)

    exit_now = os._exit

    def _exit(code: int) -> None:  # the console path of `main` ends the process at once
        record(code)
        exit_now(code)

    os._exit = _exit
    sys.argv = ["ppo-jax", *argv]
    record(cli.main())


COLUMNS = (
    "interpreter", "imports", "planning", "tracing", "lowering", "compile_or_load", "cache_load", "running",
    "writing_files", "exit", "wall",
)  # fmt: skip


def table(path: str) -> str:
    """Medians of every phase per (label, command), and the floor, as a Markdown table."""
    import statistics

    groups: dict = {}
    for line in open(path):
        rec = json.loads(line)
        groups.setdefault((rec.get("label", ""), rec["argv"][0]), []).append(rec)
    head = "| run | command | n | " + " | ".join(COLUMNS) + " | floor | programs compiled |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    for (label, command), recs in groups.items():
        med = {c: statistics.median([r.get(c, 0.0) for r in recs]) for c in COLUMNS}
        floor = med["interpreter"] + med["imports"] + med["cache_load"] + med["running"]
        compiled = sorted({r["programs_compiled_or_loaded"] - r["cache_hits"] for r in recs})
        cells = " | ".join(f"{med[c]:.2f}" for c in COLUMNS)
        rows.append(f"| {label} | {command} | {len(recs)} | {cells} | {floor:.2f} | {compiled} |")
    return "\n".join(rows) + "\n"


def timeline(compiles: list, shortest: float = 0.1) -> str:
    """One line per compile of at least `shortest` seconds, by start, and a count of the rest."""
    long = sorted(c for c in compiles if c[1] - c[0] >= shortest)
    lines = [f"{a:7.1f} -> {b:7.1f}  {b - a:6.2f} s  {thread:<16} {name}" for a, b, thread, name in long]
    rest = [c[1] - c[0] for c in compiles if c[1] - c[0] < shortest]
    return "\n".join(lines + [f"{len(rest)} shorter compiles, {sum(rest):.2f} s together"]) + "\n"


def parent(argv: list[str], json_out: str | None, label: str = "", show_timeline: bool = False) -> dict:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    env = {**os.environ, "PHASES_LAUNCH": repr(time.time())}
    launch = float(env["PHASES_LAUNCH"])
    proc = subprocess.run([sys.executable, __file__, "--child", path, *argv], env=env, capture_output=True, text=True)
    total = time.time() - launch
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {"argv": argv, "rc": proc.returncode, "stderr": proc.stderr[-2000:]}
    os.unlink(path)
    record["wall"] = total
    record["label"] = label
    compiles = record.pop("compiles", [])
    if "end" in record:
        record["exit"] = total - record["end"]
    if json_out:
        with open(json_out, "a") as f:
            f.write(json.dumps(record) + "\n")
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items() if k not in ("argv", "stderr")}
    print(" ".join(argv[:2]), json.dumps(shown))
    if show_timeline:
        print(timeline(compiles), end="")
    return record


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        args = sys.argv[1:]
        if args[0] == "--table":
            print(table(args[1]), end="")
            sys.exit(0)
        json_out, label, show_timeline = None, "", False
        while args and args[0] in ("--json", "--label", "--timeline"):
            if args[0] == "--timeline":
                show_timeline, args = True, args[1:]
                continue
            if args[0] == "--json":
                json_out = args[1]
            else:
                label = args[1]
            args = args[2:]
        if args and args[0] == "--":
            args = args[1:]
        parent(args, json_out, label, show_timeline)
