"""The run folder of a language-model run: what it holds, writing it, and loading the policy back.

    config.json     every RLHFConfig field
    metrics.csv     one row per RL seed and update (reward, accuracy or true_reward, kl, entropy,
                    length, train_clip_frac, ...)
    rlhf.json       the summary (accuracy or true reward before/after, kl_to_reference, ...,
                    compile_cache_dir and compile_cache_hit), decoded samples before and after
                    RL, wall and CPU seconds of each phase
    rlhf.png        the per-update curves
    policy.msgpack  the fine-tuned policy parameters (flax.serialization)

`load_policy(folder)` rebuilds the model from config.json and reads the parameters, so that one
can sample from the fine-tuned policy again (`sample_text`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import serialization

from ppo_jax.errors import CheckpointError
from ppo_jax.rlhf import hf_model
from ppo_jax.rlhf.config import FIELDS, RLHFConfig
from ppo_jax.rlhf.setup import RLSetup, make_setup
from ppo_jax.runtime import files, plots

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
RESULT_NAME = "rlhf.json"
PLOT_NAME = "rlhf.png"
POLICY_NAME = "policy.msgpack"
COMPARE_NAME = "compare.json"
COMPARE_PLOT_NAME = "compare.png"
# Any of these means the folder already holds a run.
RUN_FILES = (CONFIG_NAME, METRICS_NAME, RESULT_NAME, POLICY_NAME, COMPARE_NAME)


def claim_run_dir(out: str | Path, overwrite: bool = False, variants: tuple[str, ...] = ()) -> None:
    """A new run may not write into a folder that holds another one (its files would be mixed or
    replaced): raises `ConfigError` naming what was found, unless `overwrite`, which deletes the
    files of a run or comparison there (and the named `variants`' folders that hold a run); other
    files are left alone."""
    folder = Path(out)
    files.refuse_other_kind(folder, "rlhf")
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += [name for name in variants if any((folder / name / marker).exists() for marker in RUN_FILES)]
    if found and overwrite:
        found += [name for name in (PLOT_NAME, COMPARE_PLOT_NAME) if (folder / name).exists()]
    files.claim_folder(out, found, "a run", overwrite)


def result_json(result) -> dict[str, Any]:
    """The rlhf.json document: summary at top level, then samples and timings."""
    return {
        "task": result.config.task,
        "algo": result.config.algo,
        **result.summary,
        "samples_before": result.samples_before,
        "samples_after": result.samples_after,
        "wall_seconds": result.timings,
        "cpu_seconds": result.cpu_seconds,
    }


def plot_history(result, path: Path) -> None:
    """Task reward, KL to the reference, entropy and completion length per RL update: one thin
    line per seed and their mean."""
    plt = plots.pyplot()
    history, config = result.history, result.config
    updates = np.arange(1, history["true_reward"].shape[0] + 1)
    label = "exact-match accuracy" if config.task == "arithmetic" else "true reward (hidden rule)"
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), dpi=100)
    panels = [
        ("true_reward", label, "tab:blue"),
        ("kl", "KL to reference (nats / completion)", "tab:red"),
        ("entropy", "entropy (nats / token)", "tab:green"),
        ("length", "completion length (tokens)", "tab:purple"),
    ]
    for ax, (name, ylabel, color) in zip(axes, panels, strict=True):
        values = np.asarray(history[name]).reshape(len(updates), -1)
        if values.shape[1] > 1:
            ax.plot(updates, values, color=color, lw=0.6, alpha=0.35)
        ax.plot(updates, values.mean(axis=1), color=color)
        ax.set(xlabel="RL update", ylabel=ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config.task}: {config.algo}, {config.loss_aggregation}, kl_coef {config.kl_coef}")
    plots.save(plt, fig, path)


def write_run(out: str | Path, result) -> Path:
    """Write every file of the run folder (see the module docstring); returns the folder.
    metrics.csv has one row per (seed, update); policy.msgpack holds seed 0's policy."""
    out = files.prepare_dir(out)
    files.write_json(out / CONFIG_NAME, result.config.to_dict())
    metric = result.config.task_metric  # the history's true_reward is the accuracy on the arithmetic task
    history = {
        metric if name == "true_reward" else name: np.asarray(values).reshape(len(values), -1)
        for name, values in result.history.items()
    }
    seeds = next(iter(history.values())).shape[1]
    files.write_metrics_csv(out / METRICS_NAME, history, list(range(seeds)))
    (out / POLICY_NAME).write_bytes(serialization.to_bytes(jax.device_get(result.params.policy)))
    plot_history(result, out / PLOT_NAME)
    files.write_json(out / RESULT_NAME, result_json(result))
    return out


def plot_compare(results: dict, path: Path) -> None:
    """The task metric per RL update of every variant (mean over seeds)."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, result in results.items():
        values = np.asarray(result.history["true_reward"])
        ax.plot(np.arange(1, values.shape[0] + 1), values.reshape(values.shape[0], -1).mean(axis=1), label=name)
    config = next(iter(results.values())).config
    ax.set(xlabel="RL update", ylabel=config.task_metric.replace("_", " "), title=f"{config.task}: variants")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.save(plt, fig, path)


class LoadedPolicy(NamedTuple):
    """A fine-tuned policy read back from a run folder."""

    config: RLHFConfig
    setup: RLSetup
    params: Any


def load_policy(folder: str | Path) -> LoadedPolicy:
    """Read config.json and policy.msgpack of a run folder; a missing, unreadable or mismatched
    file raises `CheckpointError` naming it."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    try:
        saved = json.loads(path.read_text())
        config = RLHFConfig(**{name: value for name, value in saved.items() if name in FIELDS})
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a readable rlhf config ({err})") from err
    setup = make_setup(config)
    path = folder / POLICY_NAME
    try:
        template = hf_model.initial_policy(config, setup.policy.init(jax.random.key(0)), jax.random.key(0))
        params = serialization.from_bytes(template, path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not readable as the policy of this run's config ({err})") from err
    return LoadedPolicy(config, setup, params)


def sample_text(policy: LoadedPolicy, prompts: jax.Array, key: jax.Array) -> list[str]:
    """Sample one completion per prompt row [B, P] and decode prompt + completion."""
    task = policy.setup.task
    completions = policy.setup.policy.sample_fn(policy.params, prompts, key, task.completion_len, task.eos_id)
    return [task.decode(p) + task.decode(c) for p, c in zip(prompts, completions, strict=True)]
