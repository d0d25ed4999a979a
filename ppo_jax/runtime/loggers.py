"""Live logging of a run to TensorBoard and Weights & Biases, fed from the progress callback while
the program runs (so curves appear during training), with the config attached at the start and the
summary at the end.

A logger has three methods, called by the run driver (or by `ppo-jax sweep` after its program):

- `open(folder, config, seeds, resumed)`: `config` is the run's config record (a dict);
- `log(update, metrics)`: `metrics` maps each metric to one value per seed [S]; values that are
  not finite (`episode_return` of an update in which no episode ended) are left out;
- `close(summary)`: the run's summary (None when the run stopped or failed).

Each seed is its own curve: one TensorBoard folder `tensorboard/seed<N>` and one W&B run per seed,
grouped by the run folder's name. The step of every point is the seed's env steps so far.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ppo_jax.errors import ConfigError

STEP_METRIC = "env_steps"
WANDB_MODES = ("online", "offline")


class RunLogger(Protocol):
    def open(self, folder: Path, config: Mapping[str, Any], seeds: Sequence[int], resumed: bool) -> None: ...

    def log(self, update: int, metrics: Mapping[str, np.ndarray]) -> None: ...

    def close(self, summary: Mapping[str, Any] | None) -> None: ...


def _require(module: str, field: str, extra: str) -> None:
    """A one-line ConfigError naming the extra to install when `module` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(field, f"needs the {module} package: pip install 'ppo_jax[{extra}]'")


def per_seed_points(metrics: Mapping[str, Any], num_seeds: int) -> list[tuple[int, dict[str, float]]]:
    """[(env steps, {metric: value})] per seed from one report; metrics [S] or scalars (one run)."""
    arrays = {name: np.asarray(value, np.float64).reshape(-1) for name, value in metrics.items()}
    points = []
    for s in range(num_seeds):
        values = {n: float(a[s if a.size > 1 else 0]) for n, a in arrays.items() if n != STEP_METRIC}
        step = int(arrays[STEP_METRIC][s if arrays[STEP_METRIC].size > 1 else 0])
        points.append((step, {n: v for n, v in values.items() if math.isfinite(v)}))
    return points


def _scalars(summary: Mapping[str, Any], s: int) -> dict[str, Any]:
    """The summary's numbers and strings, with per-seed lists reduced to seed index `s`."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, list) and len(value) > s and not isinstance(value[s], (list, dict)):
            out[key] = value[s]
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


class TensorBoardLogger:
    """Scalars `train/<metric>` against env steps in `<folder>/tensorboard/seed<N>` (tensorboardX);
    the config as text at the start, the summary as text at the end."""

    def __init__(self, subdir: str = "tensorboard"):
        _require("tensorboardX", "tensorboard", "tensorboard")
        self.subdir = subdir
        self.writers: list[Any] = []

    def open(self, folder: Path, config: Mapping[str, Any], seeds: Sequence[int], resumed: bool) -> None:
        import json

        from tensorboardX import SummaryWriter

        self.writers = [SummaryWriter(logdir=str(Path(folder) / self.subdir / f"seed{seed}")) for seed in seeds]
        for writer, seed in zip(self.writers, seeds, strict=True):
            writer.add_text("config", json.dumps({**config, "seed": seed}, default=str), 0)

    def log(self, update: int, metrics: Mapping[str, np.ndarray]) -> None:
        for writer, (step, values) in zip(self.writers, per_seed_points(metrics, len(self.writers)), strict=True):
            for name, value in values.items():
                writer.add_scalar(f"train/{name}", value, step)
            writer.flush()

    def close(self, summary: Mapping[str, Any] | None) -> None:
        for s, writer in enumerate(self.writers):
            if summary is not None:
                writer.add_text("summary", json.dumps(_scalars(summary, s), default=str), 0)
            writer.close()
        self.writers = []


def has_wandb_key() -> bool:
    """Whether W&B can log in without asking: WANDB_API_KEY set, or api.wandb.ai in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_run_id(folder: Path, seed: int) -> str:
    """A W&B run id fixed by the run folder and seed, so that a resumed run continues its W&B run."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:12]
    return f"{digest}-seed{seed}"


class WandbLogger:
    """One W&B run per seed (`<folder name>-seed<N>`, grouped by `group` or the folder's name),
    config attached at the start and the summary at the end. `mode` None: online when an API key
    is set up, offline otherwise (offline runs are written under `<folder>/wandb`)."""

    def __init__(self, project: str = "ppo_jax", entity: str | None = None, mode: str | None = None, group=None):
        _require("wandb", "wandb", "wandb")
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError("wandb_mode", f"must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        self.project, self.entity, self.group = project, entity, group
        self.mode = mode or ("online" if has_wandb_key() else "offline")
        self.runs: list[Any] = []

    def open(self, folder: Path, config: Mapping[str, Any], seeds: Sequence[int], resumed: bool) -> None:
        import wandb

        folder = Path(folder)
        settings = wandb.Settings(silent=True, console="off")
        self.runs = [
            wandb.init(
                project=self.project,
                entity=self.entity,
                mode=self.mode,
                dir=str(folder),
                group=self.group or folder.name,
                name=f"{folder.name}-seed{seed}",
                id=wandb_run_id(folder, seed),
                resume="allow",
                config={**config, "seed": seed},
                settings=settings,
                reinit="create_new",
            )
            for seed in seeds
        ]

    def log(self, update: int, metrics: Mapping[str, np.ndarray]) -> None:
        for run, (step, values) in zip(self.runs, per_seed_points(metrics, len(self.runs)), strict=True):
            run.log({f"train/{name}": value for name, value in values.items()} | {"update": int(update)}, step=step)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        for s, run in enumerate(self.runs):
            if summary is not None:
                run.summary.update(_scalars(summary, s))
            run.finish(exit_code=0 if summary is not None else 1)
        self.runs = []


def feed(loggers: Sequence[RunLogger], metrics: Mapping[str, np.ndarray]) -> None:
    """Log every update of finished metrics [U, S] (a sweep's configuration after its program)."""
    num_updates = np.asarray(next(iter(metrics.values()))).shape[0]
    for u in range(num_updates):
        row = {name: np.asarray(values)[u] for name, values in metrics.items()}
        for logger in loggers:
            logger.log(u + 1, row)
