"""The executor: every command's plan (train: 1 config × S seeds; sweep: C configs × S seeds)
runs through `execute`, which compiles, places, batches, times and counts the compiles of one
chunk program and runs it in chunks between checkpoints.

A plan (`planning.RunPlan`) names a runner (`runners.SeedRuns`, `EnvShardedRun`, `SweepRuns`:
how runs are laid out on the devices and batched) and a record (the command's writer: what a
fresh run writes first, what a finished one leaves; `driver.TrainRecord`, `records.SweepRecord`).
The executor owns what they share: exact resume from the newest checkpoint, stop signals (SIGINT
and SIGTERM stop at the next checkpoint), the NaN/Inf check after every chunk and progress
reported by the host between chunks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np

from ppo_jax.engine.train import describe_nonfinite
from ppo_jax.errors import NonFiniteError, RunStopped
from ppo_jax.runtime import compile_cache, folder_lock, plots
from ppo_jax.runtime.checkpoint import RunCheckpoints, saved_target
from ppo_jax.runtime.distributed import any_process
from ppo_jax.runtime.signals import Notify, StopRequest, _silent

CHUNK_SECONDS = 0.25  # a chunk's wall time while progress is reported: the line updates ~4 times a second
MAX_CHUNK = 256  # updates one chunk program can run (its metrics rows are allocated for them)


class Record(Protocol):
    """A command's record writer: the files of its folder, before and after the chunks."""

    command: str  # what a stopped run's message tells the user to resume with
    stop_on_nonfinite: bool  # a NaN/Inf ends the run (train), or is reported per run (sweep)

    def finished(self, plan, notify: Notify) -> dict | None:
        """A resumed plan whose every update is done: its summary (None: finish it again)."""

    def begin(self, plan, notify: Notify) -> None:
        """A fresh plan: write what the folder records before anything compiles."""

    def started(self, plan, notify: Notify) -> None:
        """The state is ready (initialised or restored): say so."""

    def running(self, plan, state) -> None:
        """The first chunk is about to run, its program compiled (`state`: the run's state on the
        devices): work that needs no device may start now, beside it."""

    def nonfinite(self, plan, store: RunCheckpoints, err: NonFiniteError) -> None:
        """The run stopped on NaN/Inf: leave the folder saying why."""

    def finish(self, plan, state, chunks: Chunks) -> dict:
        """Write the folder's result files; returns the summary."""


class Chunks:
    """The chunk loop's mutable record: the compiled chunk program, metrics, timings and the
    compiles counted. `timing["compile"]` is the wall time the loop waited for programs (a program
    compiled in a thread while `init` compiled counts once)."""

    def __init__(self):
        self.compiled: Any = None
        self.pending: tuple[threading.Thread, dict] | None = None
        self.metrics: dict[str, list[np.ndarray]] = {}
        self.timing = {"compile": 0.0, "run": 0.0, "save": 0.0, "saves": 0}
        self.loads = compile_cache.loads()  # programs compiled or loaded before the run
        self.compiles = 0
        self.started = time.perf_counter()

    def count_compiles(self) -> None:
        """Fix `compiles`: the XLA programs compiled (not loaded from the persistent cache) since
        the plan started."""
        self.compiles = compile_cache.compiled_since(self.loads)

    def compile(self, build: Callable[[], Any]) -> Any:
        """`build()`, timed as compile time."""
        t0 = time.perf_counter()
        program = build()
        self.timing["compile"] += time.perf_counter() - t0
        return program

    def compile_ahead(self, plan, abstract_state, hparams) -> None:
        """Start compiling the chunk program from the state's shapes in a thread."""
        box: dict[str, Any] = {}

        def build():
            try:
                box["program"] = plan.runner.program(abstract_state, hparams, chunk_capacity(plan))
            except BaseException as err:  # re-raised in the loop's thread
                box["error"] = err

        thread = threading.Thread(target=build, name="ppo_jax-compile", daemon=True)
        thread.start()
        self.pending = (thread, box)

    def program(self, plan, state, hparams):
        """The chunk program (the runner's `program`), compiled once per run."""
        if self.pending is not None:
            (thread, box), self.pending = self.pending, None
            self.compile(thread.join)
            if "error" in box:
                raise box["error"]
            self.compiled = box["program"]
        if self.compiled is None:
            self.compiled = self.compile(lambda: plan.runner.program(state, hparams, chunk_capacity(plan)))
        return self.compiled

    def cache_hit(self) -> bool:
        """Whether no program of the run compiled: every one came from the persistent cache."""
        return compile_cache.current_dir() is not None and compile_cache.compiled_since(self.loads) == 0

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append(np.asarray(v))

    def joined(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.metrics.items()}


class _Pace:
    """Chunk lengths. While someone watches progress (a callback, one process) a chunk lasts about
    `CHUNK_SECONDS`: its length follows the last chunk's seconds per update, starting from one
    update. Otherwise chunks are as long as the program allows. A chunk never crosses a checkpoint
    boundary (`_room`). The results do not depend on the chunk lengths: every chunk runs the same
    program on the state the last one returned."""

    def __init__(self, plan):
        self.capacity = chunk_capacity(plan)
        self.paced = plan.ctx.callback is not None and jax.process_count() == 1
        self.next = 1 if self.paced else self.capacity

    def length(self, plan, done: int) -> int:
        return min(self.next, _room(plan, done))

    def ran(self, n: int, seconds: float) -> None:
        if self.paced and seconds > 0:
            self.next = int(min(self.capacity, max(1, CHUNK_SECONDS * n / seconds)))


def chunk_capacity(plan) -> int:
    """Updates the run's chunk program is compiled for: the checkpoint interval, at most
    `MAX_CHUNK` and the run's length (the same for a run and its resumes)."""
    total = plan.config.num_updates
    return max(1, min(plan.checkpoint_every or total, total, MAX_CHUNK))


def _room(plan, done: int) -> int:
    """Updates left before the next checkpoint boundary (or the end) after `done`."""
    total = plan.config.num_updates
    every = min(plan.checkpoint_every or total, total)
    return min(every - done % every, total - done)


def _check_finite(metrics: dict, done: int, seeds: list[int], store: RunCheckpoints) -> None:
    """Raise `NonFiniteError` naming the quantity, update and seed of the first NaN/Inf."""
    codes = np.asarray(metrics["nonfinite"])
    bad = np.argwhere(codes > 0)
    if bad.size:
        u, s = bad[0]
        last = store.latest_update()
        keep = f"the last good checkpoint (update {last}) is kept" if last else "no checkpoint was written"
        raise NonFiniteError(
            f"non-finite {describe_nonfinite(int(codes[u, s]))} at update {done + u + 1} (seed {seeds[s]}); {keep}; "
            "a lower --lr or --max-grad-norm usually helps (train again into the same folder with --overwrite)"
        )


class _NoCheckpoints:
    """The checkpoints of a plan without a folder (a library sweep, a sweep over several
    processes): none are written."""

    def latest_update(self) -> None:
        return None

    def close(self) -> None:
        return None


def _save(plan, store: RunCheckpoints, chunks: Chunks, state, hparams) -> None:
    if plan.out is None:
        return
    t0 = time.perf_counter()
    runner = plan.runner
    extra = {"layout": runner.layout}
    store.save(plan.ctx, plan.seeds, runner.saved(state), runner.saved_hparams(hparams), chunks.joined(), extra)
    chunks.timing["save"] += time.perf_counter() - t0
    chunks.timing["saves"] += 1


def _restore(plan, store: RunCheckpoints, chunks: Chunks, hparams):
    """The state of the checkpoint the plan resumes from (its metadata read when planning), into
    a target built once from the runner's layout of the state."""
    runner = plan.runner
    target = saved_target(runner.saved_shapes(hparams), runner.saved_hparams(hparams), plan.meta)
    saved = store.restore_saved(plan.saved_update, target, runner.saved_hparams(hparams))
    chunks.add(saved.metrics)
    return runner.restored(saved.state)


def _start(plan, record: Record, store: RunCheckpoints, chunks: Chunks, hparams, notify: Notify):
    """The state to continue from: restored from the newest checkpoint, or initialised. The chunk
    program compiles from the state's shapes meanwhile, where the runner knows them beforehand."""
    if not plan.resume:
        record.begin(plan, notify)
    abstract = plan.runner.abstract_state(hparams) if plan.saved_update < plan.config.num_updates else None
    if abstract is not None:  # a finished plan (read again from its final checkpoint) runs no chunk
        chunks.compile_ahead(plan, abstract, hparams)
    if plan.resume:
        state = _restore(plan, store, chunks, hparams)
        notify("resume", f"resuming {plan.out} at update {plan.saved_update}/{plan.config.num_updates}")
        return state
    state = chunks.compile(lambda: plan.runner.init(hparams))
    record.started(plan, notify)
    return state


class _Reports:
    """Hands `(update [R], metrics [R])` to the run's callback for every `callback_every`-th update
    and the last one, in order. The episode statistics of a report cover every update since the
    previous report: `episodes` ended, their mean `episode_return` and `episode_length` (NaN when
    none ended), so a report between the updates where episodes end (Freeway's, all 2,500 steps
    long, end together once in about 156 updates of 16 steps) still shows the latest returns.
    The other metrics are the reported update's."""

    NAMES = ("episode_return", "episode_length")

    def __init__(self):
        self.count, self.sums = 0.0, dict.fromkeys(self.NAMES, 0.0)  # the shape of a row's metrics once added

    def __call__(self, plan, done: int, metrics: dict[str, np.ndarray]) -> None:
        """Report the due updates of the chunk that ended at update `done`."""
        ctx = plan.ctx
        if ctx.callback is None:
            return
        total, n = plan.config.num_updates, len(metrics["nonfinite"])
        for i in range(n):
            row = {k: v[i] for k, v in metrics.items()}
            self._add(row)
            update = done - n + i + 1
            if update % ctx.callback_every == 0 or update == total:
                ctx.callback(np.full(len(plan.seeds), update, np.int32), self._take(row))

    def _add(self, row: dict) -> None:
        episodes = np.asarray(row["episodes"], np.float64)
        self.count = self.count + episodes
        for name in self.NAMES:
            value = np.where(episodes > 0, np.asarray(row[name], np.float64) * episodes, 0.0)
            self.sums[name] = self.sums[name] + value

    def _take(self, row: dict) -> dict:
        """`row` with the window's episode statistics; the window starts again."""
        count = np.asarray(self.count)
        out = dict(row, episodes=count.astype(np.asarray(row["episodes"]).dtype))
        for name in self.NAMES:
            mean = np.where(count > 0, self.sums[name] / np.maximum(count, 1), np.nan)
            out[name] = mean.astype(np.asarray(row[name]).dtype)
        self.count, self.sums = 0.0, dict.fromkeys(self.NAMES, 0.0)
        return out


def _running_message(plan, chunks: Chunks, done: int) -> str:
    """What the "running" notice says once the program is ready: the seconds waited for it and the
    update of the first progress report (the next multiple of `callback_every` after `done`)."""
    total, every = plan.config.num_updates, plan.ctx.callback_every
    first = min(total, (done // every + 1) * every)
    return (
        f"compiled in {chunks.timing['compile']:.1f} s; training to the first report at update {first:,} of {total:,}"
    )


def _train_chunks(
    plan, record: Record, store: RunCheckpoints, chunks: Chunks, stop: StopRequest, state, hparams, notify
):
    """Run chunks of updates to the end (or a stop request), saving at the checkpoint interval;
    progress goes to the run's callback between chunks, and `notify("running", ...)` once the
    first chunk's program is ready (compiling is over; the first report may be minutes away)."""
    total, every = plan.config.num_updates, plan.checkpoint_every
    done = plan.saved_update
    pace = _Pace(plan)
    report = _Reports()
    while done < total:
        n = pace.length(plan, done)
        fn = chunks.program(plan, state, hparams)
        if done == plan.saved_update:  # while the first chunk runs (it releases the GIL)
            _preload()
            record.running(plan, state)
            notify("running", _running_message(plan, chunks, done))
        t0 = time.perf_counter()
        new_state, metrics = jax.block_until_ready(fn(state, hparams, np.int32(n)))
        metrics = {k: np.asarray(v)[:n] for k, v in metrics.items()}
        seconds = time.perf_counter() - t0
        chunks.timing["run"] += seconds
        pace.ran(n, seconds)
        if record.stop_on_nonfinite:
            _check_finite(metrics, done, plan.seeds, store)
        state, done = new_state, done + n
        chunks.add(metrics)
        report(plan, done, metrics)
        if not (every and done % every == 0) and done < total:
            continue  # checkpoints and stops: on the checkpoint interval only
        if every:
            _save(plan, store, chunks, state, hparams)
        if any_process(stop.requested) and done < total:  # all processes stop at the same update
            if store.latest_update() != done:
                _save(plan, store, chunks, state, hparams)
            raise RunStopped(plan.out, done, total, jax.process_count(), record.command)
    if store.latest_update() != done:
        _save(plan, store, chunks, state, hparams)
    return state


_preloading: list[threading.Thread] = []


def _preload() -> None:
    """Import orbax and matplotlib (about 0.7 s on a CPU) in a thread, once per process, while the
    first program runs: the first checkpoint and plot find them ready."""
    if _preloading:
        return

    def imports():
        import orbax.checkpoint  # noqa: F401

        plots.pyplot()

    _preloading.append(threading.Thread(target=imports, name="ppo_jax-preload", daemon=True))
    _preloading[0].start()


def execute(
    plan, record: Record, notify: Notify | None = None, handle_signals: bool = True, stop: StopRequest | None = None
) -> dict[str, Any]:
    """Run `plan` to its end and have `record` write its folder; returns the record's summary.
    Raises `RunStopped` after saving when a stop signal arrived, `NonFiniteError` on NaN/Inf (when
    the record stops on it). `stop`: a stop request the caller holds over several plans (a
    comparison's arms), instead of one for this plan. The folder lock taken when the plan was
    made (`folder_lock`) is released when this returns or raises."""
    try:
        return _execute(plan, record, notify or _silent, handle_signals, stop)
    finally:
        folder_lock.release(plan.out)  # a folder this process does not hold (not the writer) is ignored


def _execute(plan, record: Record, notify: Notify, handle_signals: bool, stop: StopRequest | None) -> dict[str, Any]:
    total = plan.config.num_updates
    if plan.resume and plan.saved_update >= total:
        summary = record.finished(plan, notify)
        if summary is not None:
            return summary
    boundary = (plan.checkpoint_every or total) < total - plan.saved_update
    summary = None
    for logger in plan.loggers:
        logger.open(plan.out, {**plan.config.to_dict(), "seeds": plan.seeds}, plan.seeds, plan.resume)
    try:
        chunks = Chunks()
        # from here on, SIGINT or SIGTERM (also while compiling) asks for a stop at the next boundary
        held = StopRequest(boundary, notify, handle_signals) if stop is None else contextlib.nullcontext(stop)
        with held as stop:
            store = _NoCheckpoints() if plan.out is None else RunCheckpoints(plan.out, keep=plan.keep)
            try:
                hparams = plan.runner.hparams(plan.config)
                state = _start(plan, record, store, chunks, hparams, notify)
                try:
                    state = _train_chunks(plan, record, store, chunks, stop, state, hparams, notify)
                except NonFiniteError as err:
                    record.nonfinite(plan, store, err)
                    raise
            finally:
                store.close()
                chunks.count_compiles()
        summary = record.finish(plan, state, chunks)
        return summary
    finally:
        for logger in plan.loggers:
            logger.close(summary)
