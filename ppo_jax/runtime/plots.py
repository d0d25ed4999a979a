"""Every plot ppo_jax draws, with matplotlib's set-up in one place (`pyplot`: the Agg backend, so
plots are written without a display). Arrays are NumPy; each function writes one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ppo_jax.runtime import stats
from ppo_jax.runtime.files import forward_fill


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it takes a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(plt, fig, path: Path) -> None:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curve(path: Path, env_steps: np.ndarray, returns: np.ndarray, seeds: Sequence[int], title: str) -> None:
    """Learning curve: one thin line per seed and their mean. Arrays [U, S]."""
    plt = pyplot()
    filled = forward_fill(returns)
    x = np.asarray(env_steps)[:, 0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if len(seeds) > 1:
        for s in range(len(seeds)):
            ax.plot(x, filled[:, s], lw=0.6, alpha=0.35, color="tab:blue")
    counts = np.isfinite(filled).sum(axis=1)
    mean = np.where(counts > 0, np.nansum(filled, axis=1) / np.maximum(counts, 1), np.nan)
    ax.plot(x, mean, lw=2.0, color="tab:blue", label=f"mean of {len(seeds)} seed(s)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save(plt, fig, path)


def plot_compare(path: Path, results, title: str) -> None:
    """Mean learning curve per objective with a 95 % bootstrap band over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.0), dpi=110)
    for r in results:
        finite = np.isfinite(r.returns).all(axis=1)
        if not finite.any():
            continue
        mean, low, high = stats.pointwise_bootstrap_ci(r.returns[finite])
        ax.plot(r.env_steps[finite], mean, lw=1.8, label=r.objective)
        ax.fill_between(r.env_steps[finite], low, high, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episodic return")
    ax.set_title(f"{title}: objectives, mean and 95 % CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside the axes: no curve hidden
    save(plt, fig, path)


def learning_curves(result, points: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps [P], forward-filled episode returns [P, C, S]) at ≤ `points` evenly spaced updates."""
    returns = np.asarray(result.metrics["episode_return"], np.float64)
    num_updates = returns.shape[0]
    idx = np.unique(np.linspace(0, num_updates - 1, min(points, num_updates)).round().astype(int))
    filled = forward_fill(returns.reshape(num_updates, -1)).reshape(returns.shape)
    return np.asarray(result.metrics["env_steps"])[idx, 0, 0], filled[idx]


def plot_sweep_curves(path: Path, result, top: int = 5) -> None:
    """Mean return over seeds per configuration with a pointwise bootstrap CI band.

    With more than `top` configurations only the best `top` are coloured and banded; the others
    are thin grey lines.
    """
    plt = pyplot()
    x, curves = learning_curves(result)  # [P], [P, C, S]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    shown = list(result.ranking[:top])
    handles: dict[int, object] = {}
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(shown), 1)))
    for c in result.ranking[::-1]:
        y = curves[:, c, :]
        ok = np.isfinite(y).all(axis=0)
        if not ok.any():
            continue
        if c not in shown:
            ax.plot(x, np.nanmean(y, axis=1), lw=0.6, color="0.7", zorder=1)
            continue
        mean, low, high = stats.pointwise_bootstrap_ci(
            np.where(np.isfinite(y), y, np.nan)[:, ok], confidence=result.confidence, reps=1000
        )
        colour = colours[shown.index(c)]
        label = ", ".join(f"{n}={result.summaries[c].hyperparams[n]:.3g}" for n in result.names)
        ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0, zorder=2)
        (line,) = ax.plot(x, mean, lw=1.8, color=colour, label=f"#{shown.index(c) + 1} {label}", zorder=3)
        handles[shown.index(c)] = line
    extra = f"; top {top} of {len(result.configurations)} coloured" if len(result.configurations) > top else ""
    ax.set_title(
        f"{result.config.env}: mean of {len(result.seeds)} seeds, "
        f"{round(100 * result.confidence)}% bootstrap CI{extra}",
        fontsize=10,
    )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=[handles[i] for i in sorted(handles)], loc="best", fontsize=7)
    save(plt, fig, path)


def plot_sensitivity(path: Path, result, name: str) -> None:
    """Final-return IQM with its CI against the value of `name`, one line per setting of the other
    swept fields (grid), or one point per configuration (random search)."""
    plt = pyplot()
    others = [n for n in result.names if n != name]
    groups: dict[tuple, list] = {}
    for s in result.summaries:
        groups.setdefault(tuple(s.hyperparams[n] for n in others), []).append(s)
    as_lines = max(len(g) for g in groups.values()) > 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, (key, members) in enumerate(sorted(groups.items())):
        members.sort(key=lambda s: s.hyperparams[name])
        x = np.array([s.hyperparams[name] for s in members])
        y = np.array([s.iqm for s in members])
        err = np.array([[s.iqm - s.ci_low for s in members], [s.ci_high - s.iqm for s in members]])
        label = ", ".join(f"{n}={v:.3g}" for n, v in zip(others, key, strict=True)) if others and as_lines else None
        colour = colours(i % 10) if as_lines else "tab:blue"
        ax.errorbar(x, y, yerr=err, fmt="o-" if as_lines else "o", color=colour, capsize=3, ms=4, lw=1.2, label=label)
    values = np.array([s.hyperparams[name] for s in result.summaries])
    if (values > 0).all() and values.max() / values.min() >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(f"IQM of final return ({round(100 * result.confidence)}% CI)")
    ax.set_title(f"{result.config.env}: sensitivity to {name} ({len(result.seeds)} seeds each)", fontsize=10)
    ax.grid(alpha=0.3)
    if as_lines and others and len(groups) <= 10:
        ax.legend(fontsize=7, loc="best")
    save(plt, fig, path)
