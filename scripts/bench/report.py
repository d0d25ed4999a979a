"""The benchmark's outputs: `results.json`, `README.md` (Markdown tables) and the PNG plots
`throughput.png`, `returns.png` and `scaling.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.peers import FINAL_FRACTION, IMPLS, LABELS, PEERS, log


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, dict):  # mean/std
        if x.get("mean") is None:
            return "–"
        return f"{x['mean']:.{digits}f}" + (f" ± {x['std']:.{digits}f}" if x.get("n", 1) > 1 else "")
    if isinstance(x, float) and (abs(x) >= 1e4 or (digits == 0 and abs(x) >= 1e3)):
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ratio(runs: list[dict[str, Any]], r: dict[str, Any]) -> str:
    base = next(
        (b for b in runs if b["impl"] == "ppo_jax" and b["workload"] == r["workload"] and b["seeds"] == r["seeds"]),
        None,
    )
    if not base or not base.get("steps_per_s") or not r.get("steps_per_s"):
        return "–"
    return f"{base['steps_per_s'] / r['steps_per_s']:.2f}×"


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | implementation | seeds | env steps / seed | compile s | run s | env-steps/s | ppo_jax speed-up "
        "| peak RSS MB | final return (last 10 %) | eval return |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['workload']} | {LABELS[r['impl']]} | {r['seeds']} | failed: see results.json |||||||")
            continue
        note = " (×N of 1 seed)" if r.get("extrapolated") else ""
        label = LABELS[r["impl"]] + (f" ({r['devices']} devices)" if (r.get("devices") or 1) > 1 else "")
        compile_s = _fmt(r.get("compile_s")) if r.get("compile_s") is not None else "n/a"
        lines.append(
            f"| {r['workload']} | {label} | {r['seeds']}{note} | {r['env_steps_per_seed']:,} "
            f"| {compile_s} | {_fmt(r['run_s'])} | {_fmt(r.get('steps_per_s'), 0)} | {_ratio(runs, r)} "
            f"| {_fmt(r.get('rss_peak_mb'), 0)} | {_fmt(r.get('final_return'))} | {_fmt(r.get('eval_return'))} |"
        )
    return lines


def differences(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for impl in PEERS:
        notes = sorted({m for r in runs if r["impl"] == impl for m in r.get("mismatches", [])})
        if notes:
            lines.append(f"- **{LABELS[impl]}**: " + "; ".join(notes) + ".")
    return lines


def sweeps_section(report: dict[str, Any]) -> list[str]:
    scaling = report.get("scaling") or {}
    updates = scaling.get("updates", "a fixed number of")
    lines = [f"## ppo_jax scaling (CartPole settings, {updates} updates per point, fastest of repeated runs)", ""]
    if "points" in scaling:
        lines += [
            "| seeds | num_envs | env steps | compile s | run s | env-steps/s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for p in scaling["points"]:
            lines.append(
                f"| {p['seeds']} | {p['num_envs']} | {p['env_steps']:,} | {_fmt(p['compile_s'])} "
                f"| {_fmt(p['run_s'], 2)} | {_fmt(p['steps_per_s'], 0)} |"
            )
    elif scaling:
        lines.append(f"Scaling run failed: {scaling.get('error', '')[-300:]}")
    if report.get("memory"):
        lines += ["", "Peak RSS against total_timesteps (1 seed, CartPole):", ""]
        lines += ["| total_timesteps | run s | peak RSS MB |", "|---:|---:|---:|"]
        for m in report["memory"]:
            lines.append(f"| {m['total_timesteps']:,} | {_fmt(m.get('run_s'))} | {_fmt(m.get('rss_peak_mb'), 0)} |")
    return lines + [""]


# How the FLOPs per env step were counted: results.json files written before the count read the
# policy family have no `flop_count` and hold the analytic MLP matmul count.
FLOP_COUNTS = {
    "analytic": "ppo_jax achieved matmul FLOP/s (analytic count × measured env-steps/s):",
    "xla_cost_analysis": "ppo_jax achieved FLOP/s (XLA's cost analysis of the policy's forward and backward "
    "passes × measured env-steps/s):",
}


def efficiency_section(eff: dict[str, Any]) -> list[str]:
    lines = ["## Efficiency", "", "Measured float32 matmul throughput on this machine (same run):", ""]
    lines += ["| product | GFLOP/s |", "|---|---:|"]
    for name, rate in (eff["matmul"].get("matmul_flops_per_s") or {}).items():
        lines.append(f"| {name} | {rate / 1e9:.1f} |")
    lines += ["", FLOP_COUNTS[eff.get("flop_count", "analytic")], ""]
    lines += ["| workload | seeds | kFLOP / env step (rollout, gae, update) | GFLOP/s | of best matmul |"]
    lines += ["|---|---:|---|---:|---:|"]
    for a in eff["achieved"]:
        f = a["flops_per_env_step"]
        split = f"{f['total'] / 1e3:.0f} ({f['rollout'] / 1e3:.0f}, {f['gae'] / 1e3:.0f}, {f['update'] / 1e3:.0f})"
        lines.append(
            f"| {a['workload']} | {a['seeds']} | {split} | {a['achieved_flops_per_s'] / 1e9:.2f} "
            f"| {100 * a['fraction_of_matmul_peak']:.1f} % |"
        )
    rows = (eff.get("profile") or {}).get("profile")
    if rows:
        lines += ["", "Where the time goes (CartPole settings; each part compiled and timed on its own):", ""]
        lines += ["| seeds | rollout s | + GAE s | full s | rollout share | GAE share | update share |"]
        lines += ["|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            full, roll, gae = r["full_s"], r["rollout_s"], r["rollout+gae_s"]
            lines.append(
                f"| {r['seeds']} | {roll:.2f} | {gae:.2f} | {full:.2f} | {100 * roll / full:.0f} % "
                f"| {100 * max(gae - roll, 0) / full:.0f} % | {100 * max(full - gae, 0) / full:.0f} % |"
            )
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmarks: ppo_jax, rejax and Stable-Baselines3 PPO",
        "",
        f"Command: `{report['command']}` — started {report['started']}, {report['total_s'] / 60:.0f} min in all.",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; CPU only. Load average "
        f"{m['load_avg_start'][0]:.1f} at the start, {m['load_avg_end'][0]:.1f} at the end (per run in results.json).",
        "",
        "Each training run is its own subprocess, run one after another. *compile s*: "
        "`jax.jit(train).lower(key).compile()` (`jax.vmap(train)` for many seeds); *run s*: one call of the "
        "compiled program; *env-steps/s*: all seeds' env steps / run s (compile excluded); *peak RSS*: "
        "`ru_maxrss` of the subprocess from `os.wait4`; *final return*: mean episodic return of the episodes that "
        f"ended in the last {FINAL_FRACTION:.0%} of updates, mean ± std over seeds; *eval return*: "
        f"{report['eval_episodes']} episodes of the final stochastic policy per seed, normalisation frozen. "
        "*ppo_jax speed-up*: ppo_jax env-steps/s ÷ this row's.",
        "",
        *runs_table(report["runs"]),
        "",
        "## Where the peers differ from ppo_jax's settings",
        "",
        *differences(report["runs"]),
        f"- SB3 runs with `torch.set_num_threads({report['torch_threads']})`; its many-seed rows are N × the "
        "1-seed run of the same config (it trains seeds one after another), with that run's return.",
        "- Pendulum and Breakout many-seed rows use a shorter budget per seed (see env steps / seed): their "
        "returns are not final returns of the full budget.",
        "- ppo_jax splits a many-seed run over the CPU cores, each core a JAX device (`jax_num_cpu_devices`, "
        "seed axis sharded), as `ppo-jax train --seeds N` does; *ppo_jax, 1 device* is the same program on one "
        "device. The peers run as they ship, on one device.",
        f"- Extra XLA_FLAGS for the JAX subprocesses (ppo_jax and rejax alike): "
        f"`{report.get('xla_flags_for_jax_children') or 'none'}`.",
        "",
    ]
    if report.get("peer_errors"):
        lines += ["Peers not run: " + "; ".join(f"{k}: {v}" for k, v in report["peer_errors"].items()), ""]
    lines += sweeps_section(report)
    if report.get("efficiency"):
        lines += efficiency_section(report["efficiency"])
    lines += ["Plots: `throughput.png`, `returns.png`, `scaling.png`. All numbers: `results.json`.", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "README.md").write_text(markdown(report))
    try:
        plot_all(report, out)
    except Exception as exc:  # plots are a convenience; the tables are written already
        log(f"plotting failed: {exc!r}")


COLORS = {"ppo_jax": "tab:blue", "ppo_jax_1dev": "tab:cyan", "rejax": "tab:orange", "sb3": "tab:green"}
DPI = 110


def plot_all(report: dict[str, Any], out: Path) -> None:
    from ppo_jax.runtime.plots import pyplot

    plt = pyplot()
    runs = [r for r in report["runs"] if "error" not in r]
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    _plot_throughput(plt, runs, workloads, out)
    _plot_returns(plt, runs, workloads, out)
    _plot_scaling(plt, report, out)


def _steps_per_s(runs: list[dict[str, Any]], impl: str, workload: str, seeds: int) -> float:
    match = (r for r in runs if r["impl"] == impl and r["workload"] == workload and r["seeds"] == seeds)
    return next((r.get("steps_per_s") or 0 for r in match), 0)


def _plot_throughput(plt, runs: list[dict[str, Any]], workloads: list[str], out: Path) -> None:
    """Bars of env-steps/s per workload and implementation, one panel per number of seeds."""
    from ppo_jax.runtime.plots import save

    seeds = sorted({r["seeds"] for r in runs})
    fig, axes = plt.subplots(1, len(seeds), figsize=(5 * len(seeds), 3.8), squeeze=False, dpi=DPI)
    for ax, s in zip(axes[0], seeds, strict=True):
        for i, impl in enumerate(IMPLS):
            vals = [_steps_per_s(runs, impl, w, s) for w in workloads]
            x = [j + 0.2 * (i - 1.5) for j in range(len(workloads))]
            ax.bar(x, vals, 0.2, label=LABELS[impl], color=COLORS[impl])
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_yscale("log")
        ax.set_title(f"{s} seed{'s' if s > 1 else ''}: env-steps/s (compile excluded)")
    # The legend hangs below the first panel, so that the layout makes room for it.
    axes[0][0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8, frameon=False)
    save(plt, fig, out / "throughput.png")


def _plot_returns(plt, runs, workloads, out: Path) -> None:
    from ppo_jax.runtime.plots import save

    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.8), squeeze=False, dpi=DPI)
    for ax, w in zip(axes[0], workloads, strict=True):
        for r in runs:
            if r["workload"] != w or "curve" not in r or r.get("extrapolated"):
                continue
            style = "-" if r["seeds"] > 1 else ":"
            label = f"{LABELS[r['impl']]}, {r['seeds']} seed{'s' if r['seeds'] > 1 else ''}"
            ax.plot(r["curve"]["env_steps"], _smooth(r["curve"]["return"]), style, color=COLORS[r["impl"]], label=label)
        ax.set_title(f"{w}: episodic return (mean over seeds, smoothed)")
        ax.set_xlabel("env steps per seed")
        ax.legend(fontsize=7)
    save(plt, fig, out / "returns.png")


def _smooth(values: list, window: int = 5) -> list[float]:
    """Trailing mean over `window` points, ignoring missing ones (None)."""
    out = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(seen) / len(seen) if seen else float("nan"))
    return out


def _plot_scaling(plt, report: dict[str, Any], out: Path) -> None:
    points = (report.get("scaling") or {}).get("points") or []
    memory = [m for m in report.get("memory") or [] if m.get("rss_peak_mb")]
    if not points and not memory:
        return
    from ppo_jax.runtime.plots import save

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), dpi=DPI)
    for ax, axis in zip(axes[:2], ("seeds", "num_envs"), strict=True):
        pts = [p for p in points if p["axis"] == axis]
        ax.plot([p[axis] for p in pts], [p["steps_per_s"] for p in pts], "o-", color=COLORS["ppo_jax"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("env-steps/s")
        ax.set_title(f"ppo_jax throughput against {axis}")
    axes[2].plot([m["total_timesteps"] for m in memory], [m["rss_peak_mb"] for m in memory], "o-")
    axes[2].set_xscale("log")
    axes[2].set_ylim(0, max([m["rss_peak_mb"] for m in memory] + [1]) * 1.2)
    axes[2].set_xlabel("total_timesteps (1 seed)")
    axes[2].set_ylabel("peak RSS MB")
    axes[2].set_title("ppo_jax peak memory against budget")
    save(plt, fig, out / "scaling.png")
