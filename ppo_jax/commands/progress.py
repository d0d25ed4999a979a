"""The live progress line of `train` and `sweep`: env steps done of the total, env-steps/s, ETA
and the command's own fields. On a terminal the line is rewritten in place; otherwise a line is
written every 5 seconds.

The rate is the median over the last `WINDOW` intervals between reports (reports less than
`SAME_CHUNK` seconds apart arrive together, from one chunk of the program, and count as one): the
first report starts the clock, so compiling is not counted, and a pause such as a checkpoint
being saved changes one interval, not the rate or the ETA. `Waiting` says what a phase without
progress of its own (compiling) is doing while it lasts."""

from __future__ import annotations

import collections
import math
import sys
import threading
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


def plural(count: int, noun: str) -> str:
    """(1, 'run') -> '1 run', (3, 'run') -> '3 runs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
        speed = f"{rate:>9,.0f}" if rate > 0 else f"{'--':>9}"  # unknown until two chunks have reported
        line = f"{si(steps):>7}/{si(self.total)} steps ({100 * steps / self.total:5.1f}%) | {speed} steps/s"
        self.stream.write(f"{line}{eta} | {fields}" + ("\r" if self.live and not done else "\n"))
        self.stream.flush()


class Waiting:
    """Says that `label` (e.g. "compiling") is under way until `stop()`: on a terminal the line
    "<label> ... 12s" is rewritten every second; otherwise "<label> ..." is written once, then
    every `every` seconds with the time so far. `clear()` erases the terminal line before other
    output (the next tick writes it again)."""

    def __init__(self, label: str, stream=None, every: float = 30.0):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.live = self.stream.isatty()
        self.every = 1.0 if self.live else every
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.shown = 0  # characters of the terminal line now shown
        self.thread = threading.Thread(target=self._run, name="ppo_jax-waiting", daemon=True)
        if not self.live:
            self._write(f"{label} ...\n")
        self.thread.start()

    def _write(self, text: str) -> None:
        with self.lock:
            if self.done.is_set() and text.strip():
                return
            self.stream.write(text)
            self.stream.flush()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            elapsed = duration(time.perf_counter() - self.started)
            if self.live:
                text = f"{self.label} ... {elapsed}"
                self._write("\r" + text.ljust(self.shown))
                self.shown = len(text)
            else:
                self._write(f"{self.label} ... {elapsed}\n")

    def clear(self) -> None:
        if self.live and self.shown:
            self._write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def stop(self) -> None:
        if self.done.is_set():
            return
        self.clear()
        self.done.set()
        self.thread.join()


class TrainProgress:
    """The driver's callback(update, metrics) for `ppo-jax train`: steps over all seeds and the
    mean episodic return of the episodes that ended since the previous report (the latest such
    mean while none has ended since)."""

    def __init__(self, stream=None):
        self.stream = stream
        self.line = ProgressLine(1, stream)
        self.num_runs = 1
        self.last_return = math.nan
        self.waiting: Waiting | None = None

    def expect(self, total_steps: int, num_runs: int) -> None:
        """Set the run's size (known once the driver has resolved the config or checkpoint)."""
        self.line = ProgressLine(total_steps, self.stream)
        self.num_runs = num_runs

    def compiling(self) -> None:
        """The run has started (or resumed): say that the program compiles until it is ready."""
        self.stop()
        self.waiting = Waiting("compiling the training program", self.stream)

    def clear(self) -> None:
        """Erase the waiting line before another message."""
        if self.waiting is not None:
            self.waiting.clear()

    def stop(self) -> None:
        if self.waiting is not None:
            self.waiting.stop()

    def running(self, message: str) -> None:
        """The program is ready (`message`: the executor's "running" notice): the waiting line says
        so until the first report, instead of "compiling"."""
        self.stop()
        self.waiting = Waiting(message, self.stream)

    def __call__(self, update, metrics) -> None:
        self.stop()
        steps = np.asarray(metrics["env_steps"])
        done = int(steps.sum()) if steps.ndim else int(steps) * self.num_runs
        ret = np.asarray(metrics["episode_return"], np.float64)
        if np.isfinite(ret).any():
            self.last_return = float(np.nanmean(ret))
        shown = "no episode ended yet" if math.isnan(self.last_return) else f"{self.last_return:8.2f}"
        self.line.report(done, f"return (recent episodes) {shown}")


class SweepProgressBar:
    """The sweep's callback(SweepProgress): the runs trained at once, updates done and the line's
    figures; says it compiles until the first report."""

    def __init__(self, stream=None):
        self.stream = stream
        self.line: ProgressLine | None = None
        self.waiting = Waiting("compiling one program", stream)

    def stop(self) -> None:
        self.waiting.stop()

    def running(self, message: str) -> None:
        """The program is ready: the waiting line says so until the first report."""
        if self.line is None:
            self.stop()
            self.waiting = Waiting(message, self.stream)

    def __call__(self, p) -> None:
        if self.line is None:
            self.stop()
            self.line = ProgressLine(p.total_env_steps, self.stream)
        together = -(-p.num_runs // p.num_batches)  # the runs of one batch
        runs = f"{together} run{'s' if together != 1 else ''} at once"
        if p.num_batches > 1:
            runs = f"{p.num_runs} runs in {p.num_batches} batches of {together}, one chunk of updates each in turn"
        self.line.report(p.env_steps_done, f"{runs} | updates {p.updates_done:,}/{p.total_updates:,}")
