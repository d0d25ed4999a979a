"""The parts of the results table that train nothing: reading a run's metrics.csv, the statistics
(IQM over seeds and its bootstrap CI), the per-environment record, the Markdown table and the
learning-curve plots. Plain NumPy and matplotlib; used by scripts/reproduce.py.

Statistics follow Agarwal et al. 2021: the interquartile mean (25 % trimmed from each end, whole
values cut as scipy.stats.trim_mean does) and a 95 % percentile bootstrap over seeds (with one
task, the stratified bootstrap resamples the seeds of that task).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_FRACTION = 0.1  # the training return is the mean over the last 10 % of updates
CURVE_POINTS = 200  # learning curves are stored downsampled to at most this many points


def stem(env: str) -> str:
    """The file name of an env's record and plot: a suite's `SUITE/NAME` as `SUITE_NAME`."""
    return env.replace("/", "_")


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`: sort, cut floor(n/4) values from each end, average."""
    x = np.sort(np.asarray(x, np.float64), axis=axis)
    n = x.shape[axis]
    k = n // 4
    return np.take(x, np.arange(k, n - k), axis=axis).mean(axis=axis)


def bootstrap_iqm(scores: Sequence[float], reps: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """{"iqm", "ci_low", "ci_high"}: the IQM of `scores` and its percentile-bootstrap interval."""
    scores = np.asarray(scores, np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return {"iqm": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    rng = np.random.default_rng(seed)
    dist = iqm(scores[rng.integers(0, scores.size, (reps, scores.size))])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return {"iqm": float(iqm(scores)), "ci_low": float(low), "ci_high": float(high)}


def read_metrics(path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(env_steps [U], episode_return [U, S], seeds [S]) from a `ppo-jax train` metrics.csv
    (one row per seed and update; NaN where no episode ended in an update)."""
    rows: dict[int, list[tuple[int, float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["seed"]), []).append(
                (int(row["update"]), float(row["env_steps"]), float(row["episode_return"]))
            )
    seeds = sorted(rows)
    per_seed = [sorted(rows[s]) for s in seeds]
    steps = np.array([r[1] for r in per_seed[0]])
    returns = np.array([[r[2] for r in runs] for runs in per_seed]).T
    return steps, returns, seeds


def forward_fill(x: np.ndarray) -> np.ndarray:
    """NaNs along axis 0 replaced by the last finite value before them (leading NaNs stay)."""
    x = np.array(x, np.float64)
    for t in range(1, x.shape[0]):
        x[t] = np.where(np.isfinite(x[t]), x[t], x[t - 1])
    return x


def final_returns(returns: np.ndarray, fraction: float = FINAL_FRACTION) -> np.ndarray:
    """Per seed [S]: mean of the finite returns in the last `fraction` of updates of [U, S] (the
    last finite value before that window if none ended inside it; NaN if none ever did)."""
    returns = np.asarray(returns, np.float64)
    num_updates = returns.shape[0]
    window = max(1, math.ceil(num_updates * fraction))
    filled = (
        forward_fill(returns)[num_updates - window - 1] if num_updates > window else np.full(returns.shape[1], np.nan)
    )
    out = []
    for s in range(returns.shape[1]):
        tail = returns[-window:, s]
        out.append(float(np.mean(tail[np.isfinite(tail)])) if np.isfinite(tail).any() else float(filled[s]))
    return np.array(out)


def curve_band(steps: np.ndarray, returns: np.ndarray, reps: int = 1000, seed: int = 0) -> dict[str, list]:
    """IQM over seeds of the forward-filled return at each update with a 95 % bootstrap band
    (whole curves resampled), downsampled to at most `CURVE_POINTS` points."""
    filled = forward_fill(returns)
    keep = np.unique(np.linspace(0, len(steps) - 1, min(CURVE_POINTS, len(steps))).round().astype(int))
    keep = keep[np.isfinite(filled[keep]).all(axis=1)]
    y = filled[keep]  # [P, S]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.shape[1], (reps, y.shape[1]))
    dist = iqm(y[:, idx], axis=-1)  # [P, reps]
    low, high = np.quantile(dist, [0.025, 0.975], axis=-1)
    return {
        "env_steps": steps[keep].tolist(),
        "iqm": iqm(y, axis=-1).tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
    }


def impl_summary(seeds: Sequence[int], steps, returns, eval_returns: Sequence[float]) -> dict[str, Any]:
    """Per-seed training and evaluation returns of one implementation and their IQMs with CIs."""
    train = final_returns(returns)
    return {
        "per_seed": [
            {"seed": int(s), "train_return": float(t), "eval_return": float(e)}
            for s, t, e in zip(seeds, train, eval_returns, strict=True)
        ],
        "eval": bootstrap_iqm(eval_returns),
        "train": bootstrap_iqm(train),
        "curve": curve_band(np.asarray(steps), np.asarray(returns)),
    }


def _places(*values: float) -> int:
    """Decimals to show: 2 for returns below 10 in size (a success rate in [0, 1]), else 1."""
    return 2 if max(abs(v) for v in values) < 10 else 1


def _ci(block: dict | None) -> str:
    if not block or not np.isfinite(block.get("iqm", math.nan)):
        return "–"
    n = _places(block["iqm"], block["ci_low"], block["ci_high"])
    return f"{block['iqm']:.{n}f} [{block['ci_low']:.{n}f}, {block['ci_high']:.{n}f}]"


def _steps(n: float) -> str:
    return f"{n / 1e6:.4g}M" if n >= 1e6 else f"{n / 1e3:.4g}k"


def _fewer_seeds(rejax: dict, record: dict) -> str:
    n = len(rejax["per_seed"])
    return f" ({n} seeds)" if n != len(record["seeds"]) else ""


def _reached_cell(reached: bool, record: dict[str, Any]) -> str:
    """yes/no; a return reached only with more env steps than the published run had is a no."""
    over = record["budget"] / record["published"]["budget"]
    if reached and over > 1:
        return f"no (at {over:g}× the published budget)"
    answer = "yes" if reached else "no"
    scale = record["budget_scale"]
    return answer if scale == 1 else f"{answer} (at {scale:g}× the budget)"


def _value(x: float) -> str:
    return f"{round(x, _places(x)) + 0.0:g}"  # + 0.0: a -0.0 reads 0


def anchor_cell(anchor: dict[str, Any], with_algorithm: bool) -> str:
    """`value at budget`, and the algorithm in brackets when asked or when it is not plain PPO."""
    cell = f"{_value(anchor['return'])} at {_steps(anchor['budget'])}"
    algorithm = anchor.get("algorithm", "PPO")
    return cell + (f" ({algorithm})" if with_algorithm or algorithm != "PPO" else "")


def table_row(record: dict[str, Any]) -> str:
    """One Markdown row of the results table for a record written by reproduce.py."""
    pub = record["published"]
    others = record.get("published_other") or []
    rejax = record.get("rejax")
    has_published = pub["return"] is not None
    reached = has_published and record["ppo_jax"]["eval"]["iqm"] >= pub["return"]
    budget = _steps(record["budget"]) + (f" ({record['budget_scale']:g}×)" if record["budget_scale"] != 1 else "")
    cells = [
        record["env"],
        budget,
        str(len(record["seeds"])),
        anchor_cell(pub, with_algorithm=False) if has_published else "none published",
        "; ".join(anchor_cell(a, with_algorithm=True) for a in others) or "–",
        _ci(record["ppo_jax"]["eval"]),
        _ci(record["ppo_jax"]["train"]),
        _ci(rejax["eval"]) + _fewer_seeds(rejax, record) if rejax else "–",
        _ci(rejax["train"]) if rejax else "–",
        _reached_cell(reached, record) if has_published else "–",
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| env | budget / seed | seeds | published PPO | published, other algorithms | ppo_jax eval IQM [95 % CI] "
    "| ppo_jax training return | rejax eval IQM [95 % CI] | rejax training return | ≥ published PPO |\n"
    "|---|---|---:|---|---|---|---|---|---|---|"
)


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """The results table, one row per record, in the order given."""
    return "\n".join([TABLE_HEADER, *(table_row(r) for r in records)])


def load_records(folder: Path, order: Sequence[str]) -> list[dict[str, Any]]:
    """The complete <env>.json records in `folder`, in the order of `order` (env ids)."""
    records = []
    for env in order:
        path = folder / f"{stem(env)}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get("complete"):
                records.append(record)
    return records


def plot_record(path: Path, record: dict[str, Any]) -> None:
    """Learning curves (IQM over seeds, 95 % band) of ppo_jax and rejax, the published return as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, colour in (("ppo_jax", "tab:blue"), ("rejax", "tab:orange")):
        block = record.get(name)
        if not block:
            continue
        c = block["curve"]
        ax.fill_between(c["env_steps"], c["low"], c["high"], color=colour, alpha=0.2, lw=0)
        ax.plot(c["env_steps"], c["iqm"], color=colour, lw=1.6, label=f"{name} (IQM of {len(block['per_seed'])} seeds)")
    pub = record["published"]
    if pub["return"] is not None:
        label = f"published {anchor_cell(pub, with_algorithm=True)}"
        ax.axhline(pub["return"], color="k", ls="--", lw=1, label=label)
    ax.set_title(f"{record['env']}: training return, 95 % bootstrap band", fontsize=10)
    ax.set_xlabel("environment steps per seed")
    ax.set_ylabel("episodic return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
