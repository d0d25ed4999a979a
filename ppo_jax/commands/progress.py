"""The live progress line of `train` and `sweep`: env steps done of the total, env-steps/s, ETA
and the command's own fields. On a terminal the line is rewritten in place; otherwise a line is
written every 5 seconds.

The rate is the median over the last `WINDOW` intervals between reports (reports less than
`SAME_CHUNK` seconds apart arrive together, from one chunk of the program, and count as one): the
first report starts the clock, so compiling is not counted, and a pause such as a checkpoint
being saved changes one interval, not the rate or the ETA."""

from __future__ import annotations

import collections
import math
import sys
import time

import numpy as np

WINDOW = 32
SAME_CHUNK = 0.01


def si(n: float) -> str:
    """12_300_000 -> '12.3M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 125 -> '2m05s', 7 -> '7s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressLine:
    """One status line on `stream` (stderr by default)."""

    def __init__(self, total_steps: int, stream=None, min_interval: float = 0.2, clock=time.perf_counter):
        self.total = max(1, int(total_steps))
        self.stream = sys.stderr if stream is None else stream
        self.live = self.stream.isatty()
        self.min_interval = min_interval if self.live else 5.0
        self.clock = clock
        self.samples: collections.deque = collections.deque(maxlen=WINDOW + 1)  # (time, steps) per chunk
        self.last_print = -math.inf

    def rate(self) -> float:
        """Steps per second: the median of the rates of the last `WINDOW` intervals (0 before two
        chunks have reported)."""
        pairs = zip(list(self.samples)[:-1], list(self.samples)[1:], strict=True)
        rates = [(s1 - s0) / (t1 - t0) for (t0, s0), (t1, s1) in pairs if t1 > t0]
        return float(np.median(rates)) if rates else 0.0

    def eta(self) -> float:
        """Seconds left at the current `rate` (NaN while it is unknown)."""
        rate = self.rate()
        steps = self.samples[-1][1] if self.samples else 0
        return (self.total - steps) / rate if rate > 0 else math.nan

    def _record(self, now: float, steps: int) -> None:
        if self.samples and now - self.samples[-1][0] < SAME_CHUNK:
            self.samples[-1] = (self.samples[-1][0], steps)
        else:
            self.samples.append((now, steps))

    def report(self, steps: int, fields: str) -> None:
        """Show `steps` done and `fields` (the command's own text) if the interval has passed or
        the work is done; the first report only starts the clock."""
        now = self.clock()
        first = not self.samples
        self._record(now, steps)
        done = steps >= self.total
        if first or (now - self.last_print < self.min_interval and not done):
            return
        self.last_print = now
        rate, eta = self.rate(), self.eta()
        eta = f" | ETA {duration(eta)}" if math.isfinite(eta) and not done else ""
        line = f"{si(steps):>7}/{si(self.total)} steps ({100 * steps / self.total:5.1f}%) | {rate:>9,.0f} steps/s"
        self.stream.write(f"{line}{eta} | {fields}" + ("\r" if self.live and not done else "\n"))
        self.stream.flush()


class TrainProgress:
    """The driver's callback(update, metrics) for `ppo-jax train`: steps over all seeds and the
    mean episodic return of the episodes that ended in the last reported update."""

    def __init__(self, stream=None):
        self.stream = stream
        self.line = ProgressLine(1, stream)
        self.num_runs = 1
        self.last_return = math.nan

    def expect(self, total_steps: int, num_runs: int) -> None:
        """Set the run's size (known once the driver has resolved the config or checkpoint)."""
        self.line = ProgressLine(total_steps, self.stream)
        self.num_runs = num_runs

    def __call__(self, update, metrics) -> None:
        steps = np.asarray(metrics["env_steps"])
        done = int(steps.sum()) if steps.ndim else int(steps) * self.num_runs
        ret = np.asarray(metrics["episode_return"], np.float64)
        if np.isfinite(ret).any():
            self.last_return = float(np.nanmean(ret))
        shown = "no episode ended yet" if math.isnan(self.last_return) else f"{self.last_return:8.2f}"
        self.line.report(done, f"return (last update) {shown}")


class SweepProgressBar:
    """The sweep's callback(SweepProgress): runs and updates done, batch, and the line's figures."""

    def __init__(self, stream=None):
        self.stream = stream
        self.line: ProgressLine | None = None

    def __call__(self, p) -> None:
        if self.line is None:
            self.line = ProgressLine(p.total_env_steps, self.stream)
        batch = f" | batch {p.batch + 1}/{p.num_batches}" if p.num_batches > 1 else ""
        fields = f"runs {p.runs_done}/{p.num_runs} | updates {p.updates_done:,}/{p.total_updates:,}{batch}"
        self.line.report(p.env_steps_done, fields)
