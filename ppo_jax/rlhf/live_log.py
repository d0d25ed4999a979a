"""Live TensorBoard / W&B logging of a language-model run, fed from its progress callback while
the programs run, through the classic trainer's loggers (`runtime.loggers`).

`LiveLog(loggers, callback)` is itself a progress callback `(phase, step, metrics)`: it calls
`callback` (the command's printer, or None) and then every logger's `log` with

- pretraining: `pretrain_loss` at the pretraining step (every `log_every` steps);
- reward model: `reward_model_loss`, `reward_model_accuracy` at its step;
- RL: every metric of the update (`reward`, the task metric as `accuracy` or `true_reward`,
  `kl`, `entropy`, `length`, `train_*`, ...) at the RL update, one value per seed.

The x-axis of every point is the phase's own step (the loggers' step field). `open` attaches the
config at the start and `close` the summary at the end (None when the run stopped or failed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppo_jax.runtime.loggers import STEP_METRIC, RunLogger

SKIPPED = ("nonfinite",)  # a bit mask for the NaN/Inf check, not a curve


def points(phase: str, step: Any, metrics: Mapping[str, Any], task_metric: str) -> dict[str, np.ndarray]:
    """One report as the loggers' metrics: names prefixed by the supervised phase (none for RL),
    `true_reward` renamed to `task_metric`, the phase's step as the step field."""
    base = phase.rsplit("/", 1)[-1]  # a --compare variant reports "<variant>/rl"
    prefix = "" if base == "rl" else base + "_"
    out = {
        prefix + (task_metric if name == "true_reward" else name): np.asarray(value, np.float64)
        for name, value in metrics.items()
        if name not in SKIPPED
    }
    out[STEP_METRIC] = np.asarray(step)
    return out


class LiveLog:
    """A progress callback that also feeds `loggers` (see the module docstring)."""

    def __init__(self, loggers: Sequence[RunLogger], callback: Callable | None = None, task_metric: str = "accuracy"):
        self.loggers = tuple(loggers)
        self.callback = callback
        self.task_metric = task_metric

    def open(self, folder: Path, config: Mapping[str, Any], seeds: int, resumed: bool) -> None:
        for logger in self.loggers:
            logger.open(Path(folder), dict(config), list(range(seeds)), resumed)

    def __call__(self, phase: str, step, metrics: Mapping[str, Any]) -> None:
        if self.callback is not None:
            self.callback(phase, step, metrics)
        row = points(phase, step, metrics, self.task_metric)
        for logger in self.loggers:
            logger.log(int(np.max(step)), row)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        for logger in self.loggers:
            logger.close(summary)

    def stop(self) -> None:
        """Stop the wrapped printer's waiting line, if it has one."""
        if hasattr(self.callback, "stop"):
            self.callback.stop()
