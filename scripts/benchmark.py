"""Side-by-side PPO benchmark: ppo_jax, rejax and Stable-Baselines3 on the same settings.

    python scripts/benchmark.py            # full run (tens of minutes on 2 CPU cores)
    python scripts/benchmark.py --quick    # smoke run, about two minutes
    python scripts/benchmark.py --only ppo_jax,rejax --workloads cartpole

Runs every implementation one after another, each training run in its own subprocess (peak RSS
from `os.wait4` on the child), and writes `results.json`, `README.md` (Markdown tables) and PNG
plots to `--out` (default: benchmark/ in the current directory, benchmark-quick/ with --quick; the
published tables were written with `--out docs/benchmarks`). The peers' virtual environments
(about 2.3 GB) are installed on first use under $XDG_CACHE_HOME/ppo_jax_bench (or `--cache`),
after a question on a terminal; elsewhere only with `--yes`. From an installed ppo_jax,
`ppo-jax bench` runs this script when it finds it beside the package.

Measured per implementation and workload: compile seconds (`jit(...).lower(...).compile()`),
env-steps/s of the compiled run (compile excluded), peak RSS of the process, final return (mean
episodic return of the last 10 % of updates, averaged over seeds) and the return of a common
evaluation (stochastic policy, full episodes, normalisation statistics frozen). Also: ppo_jax
throughput against the number of seeds and of environments, peak memory against
total_timesteps, achieved FLOP/s (XLA's count of the policy's passes) against measured matmul
throughput, and a rollout/update split. Timings are recorded, never asserted.

The pieces live in `scripts/bench/`: `peers.py` (implementations, workloads, venvs and
subprocesses), `workers.py` (the ppo_jax children: `benchmark.py _worker <json>`), `flops.py` and
`report.py` (Markdown, JSON and plots).
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
from typing import Any

from bench.peers import (
    FINAL_FRACTION,
    IMPLS,
    PEERS,
    PEERS_DIR,
    PEERS_INSTALL_SIZE,
    REPO_ROOT,
    WORKLOADS,
    XLA_WORKAROUND,
    default_cache,
    ensure_peer_env,
    extrapolated_sb3,
    log,
    peer_env_ready,
    run_impl,
    run_worker,
    set_quiet,
    workload_config,
)
from bench.report import write_outputs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ppo-jax bench", description="Benchmark ppo_jax side by side with rejax and Stable-Baselines3 PPO."
    )
    p.add_argument("--quick", action="store_true", help="reduced smoke run (CartPole, tiny budgets, 4 seeds)")
    p.add_argument("--only", default=",".join(IMPLS), help=f"comma list of implementations ({', '.join(IMPLS)})")
    p.add_argument("--workloads", default=None, help=f"comma list of workloads ({', '.join(WORKLOADS)})")
    p.add_argument("--seeds", type=int, default=None, help="the many-seeds count (default 32; quick 4)")
    p.add_argument("--eval-episodes", type=int, default=32, help="episodes of the common final evaluation (0: off)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads for SB3")
    p.add_argument("--no-scaling", action="store_true", help="skip the ppo_jax scaling and memory sweeps")
    p.add_argument("--no-efficiency", action="store_true", help="skip the FLOP/s and profile measurements")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: ./benchmark, or ./benchmark-quick with --quick)"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="folder of the peers' virtual environments (default: $XDG_CACHE_HOME/ppo_jax_bench or "
        "~/.cache/ppo_jax_bench; $PPO_JAX_BENCH_CACHE wins)",
    )
    p.add_argument("--yes", action="store_true", help=f"install missing peer environments ({PEERS_INSTALL_SIZE})")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only errors and the final line")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds before a training subprocess is killed")
    p.add_argument(
        "--from-json", type=Path, default=None, help="only re-render README.md and plots from a results.json"
    )
    return p


def sweep_settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(seeds=[1, 4], num_envs=[4, 16], updates=4, memory=[4_096, 16_384], profile_seeds=[1], reps=5)
    return dict(
        seeds=[1, 4, 16, 64, 256],
        num_envs=[4, 16, 64, 256, 1024],
        updates=32,
        memory=[50_000, 500_000, 5_000_000],
        profile_seeds=[1, 32],
        reps=20,
    )


def run_workloads(args, impls: list[str], pythons: dict[str, Path], many: int) -> list[dict[str, Any]]:
    """Every implementation on every workload at 1 seed and at `many` seeds, one after another.

    SB3 trains seeds one after another, so its many-seed row is N × a 1-seed run of the same config.
    """
    runs: list[dict[str, Any]] = []
    names = args.workloads.split(",") if args.workloads else (["cartpole"] if args.quick else list(WORKLOADS))
    for name in names:
        for seeds in (1, many):
            config = workload_config(WORKLOADS[name], args.quick, many=seeds > 1)
            for impl in impls:
                if impl == "ppo_jax_1dev" and seeds == 1:  # one seed always runs on one device
                    continue
                if impl == "sb3" and seeds > 1:
                    one = next((r for r in runs if r["impl"] == "sb3" and r["config"] == config), None)
                    if one is None:
                        one = {**run_impl(impl, config, 1, args, pythons.get(impl)), "workload": name, "config": config}
                    if "error" not in one:
                        runs.append({**extrapolated_sb3(one, seeds), "workload": name, "config": config})
                    continue
                record = run_impl(impl, config, seeds, args, pythons.get(impl))
                runs.append({**record, "workload": name, "config": config})
    return runs


def run_sweeps(args, settings: dict[str, Any]) -> dict[str, Any]:
    """ppo_jax alone: throughput against seeds and num_envs; peak RSS against total_timesteps."""
    config = workload_config(WORKLOADS["cartpole"], quick=False)
    spec = {"task": "scaling", "config": config, **{k: settings[k] for k in ("seeds", "num_envs", "updates")}}
    log("scaling: steps/s against seeds and num_envs")
    scaling = run_worker(spec, args.timeout)
    memory = []
    for total in settings["memory"]:
        cfg = workload_config(WORKLOADS["cartpole"], quick=False, total_timesteps=total)
        spec = {"task": "train", "config": cfg, "seeds": 1, "eval_episodes": 0}
        log(f"memory: total_timesteps={total}")
        record = run_worker(spec, args.timeout)
        record.pop("update_returns", None)
        memory.append({"total_timesteps": total, **{k: record.get(k) for k in ("rss_peak_mb", "run_s", "error")}})
    return {"scaling": scaling, "memory": memory}


def run_efficiency(args, settings: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Measured matmul throughput, the FLOP/s achieved by each ppo_jax run, and a time split."""
    log("efficiency: matmul throughput")
    matmul = run_worker({"task": "matmul", "reps": settings["reps"]}, args.timeout)
    peak = max((matmul.get("matmul_flops_per_s") or {"none": float("nan")}).values())
    ours = [r for r in runs if r["impl"] == "ppo_jax" and r.get("steps_per_s")]
    log("efficiency: FLOPs per env step (XLA cost analysis)")
    counted = run_worker({"task": "flops", "configs": [r["config"] for r in ours]}, args.timeout)
    achieved = []
    for r, flops in zip(ours, counted.get("flops") or [], strict=False):
        rate = flops["total"] * r["steps_per_s"]
        achieved.append(
            {
                "workload": r["workload"],
                "seeds": r["seeds"],
                "flops_per_env_step": flops,
                "achieved_flops_per_s": rate,
                "fraction_of_matmul_peak": rate / peak,
            }
        )
    cfg = workload_config(WORKLOADS["cartpole"], quick=False, total_timesteps=(8 if args.quick else 50) * 512)
    log("efficiency: rollout / GAE / update split")
    profile = run_worker({"task": "profile", "config": cfg, "seeds": settings["profile_seeds"]}, args.timeout)
    return {
        "matmul": matmul,
        "matmul_peak_flops_per_s": peak,
        "flop_count": "xla_cost_analysis",
        "flop_count_error": counted.get("error"),
        "achieved": achieved,
        "profile": profile,
    }


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True)
        return out.stdout.decode().strip() or None
    except OSError:
        return None


def confirm_install(impls: list[str], cache: Path, yes: bool) -> bool:
    """Whether the missing peer environments of `impls` may be installed: with `--yes`, or when a
    user at a terminal says so; otherwise one line says what it would take and False is returned."""
    missing = [i for i in impls if i in PEERS and not peer_env_ready(PEERS[i], cache)]
    if not missing or yes:
        return True
    what = (
        f"benchmarking {' and '.join(missing)} installs {'its' if len(missing) == 1 else 'their'} Python "
        f"environment{'s' if len(missing) > 1 else ''} under {cache} ({PEERS_INSTALL_SIZE}, from PyPI)"
    )
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"{what}. Install now? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return True
    print(
        f"ppo-jax bench: error: {what}; rerun with --yes to install, --cache DIR to put it elsewhere, "
        "or --only ppo_jax to skip the peers",
        file=sys.stderr,
    )
    return False


def run_benchmark(argv: list[str] | None = None) -> int:
    """The `ppo-jax bench` entry point: run everything, write results.json, README.md and plots."""
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        out = args.out or args.from_json.parent
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(report, out)
        return 0
    impls = [i.strip() for i in args.only.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        build_parser().error(f"unknown implementation(s) {', '.join(unknown)}; known: {', '.join(IMPLS)}")
    if not confirm_install(impls, args.cache, args.yes):
        return 2
    out = args.out or Path("benchmark-quick" if args.quick else "benchmark")  # under the current directory
    out.mkdir(parents=True, exist_ok=True)
    settings = sweep_settings(args.quick)
    many = args.seeds or (4 if args.quick else 32)
    report: dict[str, Any] = {
        "command": " ".join(["scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "git_commit": _git_commit(),
        "xla_flags_for_jax_children": XLA_WORKAROUND,
        "torch_threads": args.torch_threads,
        "final_fraction": FINAL_FRACTION,
        "eval_episodes": args.eval_episodes,
        "peer_errors": {},
    }
    pythons = {}
    for impl in impls:
        if impl in PEERS and not (PEERS_DIR / PEERS[impl].runner).exists():
            report["peer_errors"][impl] = f"runner {PEERS_DIR / PEERS[impl].runner} not found (needs a source checkout)"
        elif impl in PEERS:
            try:
                pythons[impl] = ensure_peer_env(PEERS[impl], args.cache)
            except (subprocess.CalledProcessError, OSError) as exc:
                report["peer_errors"][impl] = f"environment setup failed: {exc}"
    impls = [i for i in impls if i not in report["peer_errors"]]
    t0 = time.perf_counter()
    report["runs"] = run_workloads(args, impls, pythons, many)
    if "ppo_jax" in impls and not args.no_scaling:
        report.update(run_sweeps(args, settings))
    if "ppo_jax" in impls and not args.no_efficiency:
        report["efficiency"] = run_efficiency(args, settings, report["runs"])
    report["total_s"] = time.perf_counter() - t0
    report["machine"]["load_avg_end"] = os.getloadavg()
    write_outputs(report, out)
    log(f"wrote {out}/results.json, README.md and plots in {report['total_s']:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        from bench.workers import worker_main

        return worker_main(argv[1:])
    return run_benchmark(argv)


if __name__ == "__main__":
    sys.exit(main())
