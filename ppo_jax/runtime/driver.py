"""The run driver: `run(config, out=..., seeds=..., ...)` trains a run into a run folder and
returns its summary. `ppo-jax train` is this function plus flag parsing and printing. The
request is checked and resolved first, before anything compiles (`runtime.planning`).

It owns everything around the jitted program: the run folder, chunked training between
checkpoints, exact resume, stop signals (SIGINT and SIGTERM stop at the next checkpoint), the
NaN/Inf check after every chunk, policy export and the files a run leaves (`config.json`,
`metrics.csv`, `summary.json`, `curve.png`, `checkpoints/`, `policy-seed<S>.npz`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ppo_jax.config import PPOConfig
from ppo_jax.engine.evaluate import Acting
from ppo_jax.engine.train import describe_nonfinite
from ppo_jax.errors import NonFiniteError, RunFileError, RunStopped
from ppo_jax.plugins import is_reference
from ppo_jax.runtime import compile_cache, files, plots
from ppo_jax.runtime.checkpoint import RunCheckpoints
from ppo_jax.runtime.distributed import any_process, is_writer
from ppo_jax.runtime.planning import RunPlan, plan_run
from ppo_jax.runtime.policy_file import export_policy
from ppo_jax.runtime.signals import Notify, StopRequest, _silent

CHUNK_SECONDS = 0.25  # a chunk's wall time while progress is reported: the line updates ~4 times a second
MAX_CHUNK = 256  # updates one chunk program can run (its metrics rows are allocated for them)


class _Chunks:
    """The chunk loop's mutable record: the compiled chunk program, metrics and timings.
    `timing["compile"]` is the wall time the loop waited for programs (a program compiled in a
    thread while `init` compiled counts once)."""

    def __init__(self):
        self.compiled: Any = None
        self.pending: tuple[threading.Thread, dict] | None = None
        self.metrics: dict[str, list[np.ndarray]] = {}
        self.timing = {"compile": 0.0, "run": 0.0, "save": 0.0, "saves": 0}
        self.loads = compile_cache.loads()  # programs compiled or loaded before the run

    def compile(self, build: Callable[[], Any]) -> Any:
        """`build()`, timed as compile time."""
        t0 = time.perf_counter()
        program = build()
        self.timing["compile"] += time.perf_counter() - t0
        return program

    def compile_ahead(self, plan: RunPlan, abstract_state, hparams) -> None:
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

    def program(self, plan: RunPlan, state, hparams):
        """The chunk program (`runners.SeedRuns.program`), compiled once per run."""
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

    def __init__(self, plan: RunPlan):
        self.capacity = chunk_capacity(plan)
        self.paced = plan.ctx.callback is not None and jax.process_count() == 1
        self.next = 1 if self.paced else self.capacity

    def length(self, plan: RunPlan, done: int) -> int:
        return min(self.next, _room(plan, done))

    def ran(self, n: int, seconds: float) -> None:
        if self.paced and seconds > 0:
            self.next = int(min(self.capacity, max(1, CHUNK_SECONDS * n / seconds)))


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


def _save(plan: RunPlan, store: RunCheckpoints, chunks: _Chunks, state, hparams) -> None:
    t0 = time.perf_counter()
    runner = plan.runner
    extra = {"layout": runner.layout}
    store.save(plan.ctx, plan.seeds, runner.saved(state), runner.saved_hparams(hparams), chunks.joined(), extra)
    chunks.timing["save"] += time.perf_counter() - t0
    chunks.timing["saves"] += 1


def _start(plan: RunPlan, store: RunCheckpoints, chunks: _Chunks, hparams, notify: Notify):
    """The state to continue from: restored from the newest checkpoint, or initialised."""
    if plan.resume:
        saved, _ = store.restore(plan.ctx)
        chunks.add(saved.metrics)
        state = plan.runner.restored(saved.state)
        notify("resume", f"resuming {plan.out} at update {plan.saved_update}/{plan.config.num_updates}")
        return state
    if is_writer():
        if plan.restart:
            files.remove_run_files(plan.out, keep=("config.json",))
        record = {**plan.config.to_dict(), "seeds": plan.seeds, "shard_envs": plan.runner.layout == "shard_envs"}
        if plan.ctx.unrecorded:
            record["unrecorded"] = list(plan.ctx.unrecorded)
            notify(
                "warning",
                f"warning: {'; '.join(plan.ctx.unrecorded)} has no importable reference: {plan.out} records its "
                "config, but eval and resume need the object passed again (define it at module level to record it)",
            )
        files.write_json(plan.out / "config.json", record)
    abstract = plan.runner.abstract_state(hparams)
    if abstract is not None:  # the chunk program compiles while init does
        chunks.compile_ahead(plan, abstract, hparams)
    state = chunks.compile(lambda: plan.runner.init(hparams))
    cfg = plan.config
    steps = f"{cfg.env_steps:,} steps"
    if cfg.env_steps != cfg.total_timesteps:
        steps += f" (total_timesteps {cfg.total_timesteps:,} rounded down to whole batches of {cfg.batch_size:,})"
    notify("start", f"training {plan.config.env}: {len(plan.seeds)} seed(s) x {steps} -> {plan.out}")
    return state


def chunk_capacity(plan: RunPlan) -> int:
    """Updates the run's chunk program is compiled for: the checkpoint interval, at most
    `MAX_CHUNK` and the run's length (the same for a run and its resumes)."""
    total = plan.config.num_updates
    return max(1, min(plan.checkpoint_every or total, total, MAX_CHUNK))


def _room(plan: RunPlan, done: int) -> int:
    """Updates left before the next checkpoint boundary (or the end) after `done`."""
    total = plan.config.num_updates
    every = min(plan.checkpoint_every or total, total)
    return min(every - done % every, total - done)


def _report(plan: RunPlan, done: int, metrics: dict[str, np.ndarray]) -> None:
    """Hand `(update [S], metrics [S])` to the run's callback for every `callback_every`-th update
    of the chunk that ended at update `done` and for the last update of the run, in order."""
    ctx = plan.ctx
    if ctx.callback is None:
        return
    total, n = plan.config.num_updates, len(metrics["nonfinite"])
    for i in range(n):
        update = done - n + i + 1
        if update % ctx.callback_every == 0 or update == total:
            ctx.callback(np.full(len(plan.seeds), update, np.int32), {k: v[i] for k, v in metrics.items()})


def _train_chunks(plan: RunPlan, store: RunCheckpoints, chunks: _Chunks, stop: StopRequest, state, hparams):
    """Run chunks of updates to the end (or a stop request), saving at the checkpoint interval;
    progress goes to the run's callback between chunks."""
    total, every = plan.config.num_updates, plan.checkpoint_every
    done = plan.saved_update
    pace = _Pace(plan)
    while done < total:
        n = pace.length(plan, done)
        fn = chunks.program(plan, state, hparams)
        _preload()  # while the compiled program runs (it releases the GIL)
        t0 = time.perf_counter()
        new_state, metrics = jax.block_until_ready(fn(state, hparams, np.int32(n)))
        metrics = {k: np.asarray(v)[:n] for k, v in metrics.items()}
        seconds = time.perf_counter() - t0
        chunks.timing["run"] += seconds
        pace.ran(n, seconds)
        _check_finite(metrics, done, plan.seeds, store)
        state, done = new_state, done + n
        chunks.add(metrics)
        _report(plan, done, metrics)
        if not (every and done % every == 0) and done < total:
            continue  # checkpoints and stops: on the checkpoint interval only
        if every:
            _save(plan, store, chunks, state, hparams)
        if any_process(stop.requested) and done < total:  # all processes stop at the same update
            if store.latest_update() != done:
                _save(plan, store, chunks, state, hparams)
            raise RunStopped(plan.out, done, total, jax.process_count())
    if store.latest_update() != done:
        _save(plan, store, chunks, state, hparams)
    return state


def summarize(plan: RunPlan, state, metrics: dict, timing: dict, steps_run: int, cache_hit: bool = False) -> dict:
    """What `summary.json` holds: final returns per seed and their statistics, timings, speed,
    the parameters' SHA-256 and where the run ran."""
    per_seed = files.final_returns(metrics["episode_return"])
    finite = per_seed[np.isfinite(per_seed)]
    stat = (lambda f: float(f(finite))) if finite.size else (lambda f: math.nan)
    return {
        "env": plan.config.env,
        "seeds": plan.seeds,
        "total_timesteps": plan.config.env_steps,  # steps run per seed: whole batches
        "total_timesteps_requested": plan.config.total_timesteps,
        "num_updates": plan.config.num_updates,
        "final_return_mean": stat(np.mean),
        "final_return_std": stat(np.std),
        "final_return_min": stat(np.min),
        "final_return_max": stat(np.max),
        "final_return_per_seed": per_seed.tolist(),
        "compile_seconds": timing["compile"],
        "run_seconds": timing["run"],
        "env_steps_per_second": steps_run / timing["run"] if timing["run"] > 0 else math.nan,
        "checkpoint_seconds": timing["save"],
        "checkpoints_saved": timing["saves"],
        "params_sha256": files.params_sha256(state.params),
        "compile_cache_dir": compile_cache.current_dir(),
        "compile_cache_hit": cache_hit,
        "backend": jax.default_backend(),
        "processes": jax.process_count(),
        "devices": plan.runner.devices(),
        "shard_envs": plan.runner.layout == "shard_envs",
    }


def policy_description(ctx) -> dict[str, Any] | None:
    """How `load_policy` rebuilds the run's family: a family named by reference is made again
    from the run's config (`{"family": ref, "config": ...}`); a shipped one describes itself
    (`describe()`); None for an object without a reference that cannot describe itself."""
    network = ctx.config.network
    if is_reference(network) and not any(u.startswith("network:") for u in ctx.unrecorded):
        desc: dict[str, Any] = {"family": network, "config": ctx.config.to_dict()}
        if getattr(ctx.policy, "mask_size", 0):
            desc["legal_action_mask"] = ctx.policy.mask_size
        return desc
    return ctx.policy.describe() if hasattr(ctx.policy, "describe") else None


def export_policies(plan: RunPlan, state) -> bool:
    """One `policy-seed<S>.npz` per seed (state batched over runs); False (nothing written) for a
    user's policy family that can neither be rebuilt by reference nor describe itself."""
    ctx = plan.ctx
    description = policy_description(ctx)
    if description is None:
        return False
    acting = Acting(ctx.policy, ctx.dist, ctx.rollout.spec)
    for s, seed in enumerate(plan.seeds):
        params = jax.tree.map(lambda x: x[s], state.params)  # noqa: B023
        stats = jax.tree.map(lambda x: x[s], state.env.obs_stats) if plan.config.normalize_obs else None  # noqa: B023
        path = plan.out / f"policy-seed{seed}.npz"
        export_policy(path, acting, params, stats, plan.config.env, description)
    return True


def _finish(plan: RunPlan, state, chunks: _Chunks) -> dict[str, Any]:
    state = jax.device_get(plan.runner.saved(state)._replace(key=None))  # NumPy from here: no JAX computations
    metrics = chunks.joined()
    steps_run = (plan.config.num_updates - plan.saved_update) * plan.config.batch_size * len(plan.seeds)
    summary = summarize(plan, state, metrics, chunks.timing, steps_run, chunks.cache_hit())
    if not is_writer():  # the same summary on every process; process 0 writes the files
        summary["policies_exported"] = policy_description(plan.ctx) is not None
        return summary
    summary["policies_exported"] = export_policies(plan, state)
    files.write_metrics_csv(plan.out / "metrics.csv", metrics, plan.seeds)
    files.write_json(plan.out / "summary.json", summary)
    plots.plot_curve(
        plan.out / "curve.png", metrics["env_steps"], metrics["episode_return"], plan.seeds, plan.config.env
    )
    return summary


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


def execute(plan: RunPlan, notify: Notify | None = None, handle_signals: bool = True) -> dict[str, Any]:
    """Train `plan` to its end and write the run folder; returns the summary. Raises `RunStopped`
    after saving when a stop signal arrived, `NonFiniteError` on NaN/Inf."""
    notify = notify or _silent
    total = plan.config.num_updates
    summary_path = plan.out / "summary.json"
    if plan.resume and plan.saved_update >= total and summary_path.exists():
        try:
            summary = files.read_json(summary_path, "the run's summary")
        except RunFileError as err:  # the final checkpoint still holds everything: write the files again
            notify("repair", f"{err}; writing the run's files again from its final checkpoint")
        else:
            notify("finished", f"{plan.out} has finished all {total} updates; no updates were left to run")
            return summary
    boundary = (plan.checkpoint_every or total) < total - plan.saved_update
    summary = None
    for logger in plan.loggers:
        logger.open(plan.out, {**plan.config.to_dict(), "seeds": plan.seeds}, plan.seeds, plan.resume)
    try:
        # from here on, SIGINT or SIGTERM (also while compiling) asks for a stop at the next boundary
        with StopRequest(boundary, notify, handle_signals) as stop:
            store = RunCheckpoints(plan.out, keep=plan.keep)
            try:
                chunks = _Chunks()
                hparams = plan.runner.hparams(plan.config)
                state = _start(plan, store, chunks, hparams, notify)
                try:
                    state = _train_chunks(plan, store, chunks, stop, state, hparams)
                except NonFiniteError as err:
                    if is_writer() and store.latest_update() is None:  # the folder says why it has no checkpoint
                        files.write_json(plan.out / files.NONFINITE_FILE, {"reason": "nonfinite", "message": str(err)})
                    raise
            finally:
                store.close()
        summary = _finish(plan, state, chunks)
        return summary
    finally:
        for logger in plan.loggers:
            logger.close(summary)


def run(config: PPOConfig | None = None, **options: Any) -> dict[str, Any]:
    """Train PPO into a run folder and return the summary that `summary.json` holds.

    options: out (folder; default runs/<env>-<time>), seeds (a count or the seeds), checkpoint_every
    and keep (orbax checkpoints), resume (a run folder to continue exactly; no config then),
    shard_envs (one run, envs over all devices), callback(update [S], metrics [S]) and
    callback_every (progress: called by the host between chunks of the compiled program, for every
    callback_every-th update and the last, in order; default num_updates // 50),
    notify(kind, message) (messages: start, resume, stop, abort, finished), handle_signals
    (SIGINT/SIGTERM stop at the next checkpoint; default True), env / env_params / network (a
    custom env or policy family), loggers (`runtime.loggers` TensorBoardLogger / WandbLogger, or
    your own with open/log/close; fed with the callback's reports).

    Raises `ConfigError` (bad input, before compiling), `CheckpointError`, `NonFiniteError`,
    `RunStopped` (stopped by a signal after saving a checkpoint) and `OSError`.
    """
    notify = options.pop("notify", None)
    handle_signals = options.pop("handle_signals", True)
    return execute(plan_run(config, **options), notify, handle_signals)
