"""The run driver: `run(config, out=..., seeds=..., ...)` trains a run into a run folder and
returns its summary. `ppo-jax train` is this function plus flag parsing and printing.

It owns everything around the jitted program: checking the request before anything compiles,
the run folder, chunked training between checkpoints, exact resume, stop signals (SIGINT and
SIGTERM stop at the next checkpoint), the NaN/Inf check after every chunk, policy export and
the files a run leaves (`config.json`, `metrics.csv`, `summary.json`, `curve.png`,
`checkpoints/`, `policy-seed<S>.npz`).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax.config import PPOConfig, resolve_seeds
from ppo_jax.engine.evaluate import Acting
from ppo_jax.engine.train import TrainContext, describe_nonfinite, make_context
from ppo_jax.errors import CheckpointError, ConfigError, NonFiniteError, RunFileError, RunStopped
from ppo_jax.runtime import compile_cache, files, plots
from ppo_jax.runtime.checkpoint import CHECKPOINT_DIR, RunCheckpoints, config_from_meta
from ppo_jax.runtime.policy_file import export_policy
from ppo_jax.runtime.runners import RUNNERS, EnvShardedRun, SeedRuns
from ppo_jax.runtime.signals import Notify, StopRequest, _silent

# Files whose presence means a folder holds a run.
RUN_MARKERS = ("config.json", "summary.json", "metrics.csv", CHECKPOINT_DIR)


class RunPlan(NamedTuple):
    """A checked request: everything `execute` needs, decided before anything compiles."""

    config: PPOConfig
    seeds: list[int]
    out: Path
    runner: Any  # `runners.SeedRuns` or `runners.EnvShardedRun`
    resume: bool
    saved_update: int  # updates done by the checkpoint a resume starts from (0 for a fresh run)
    checkpoint_every: int | None
    keep: int | None
    loggers: tuple = ()  # `runtime.loggers.RunLogger`s fed from the progress callback

    @property
    def ctx(self) -> TrainContext:
        return self.runner.ctx


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def refuse_used_run_dir(out: str | Path | None) -> None:
    """A fresh run may not write into a folder that holds another run: its checkpoints would be
    mixed with the new ones. Raises `ConfigError` naming what was found."""
    if out is None:
        return
    found = [name for name in RUN_MARKERS if (Path(out) / name).exists()]
    if found:
        raise ConfigError(
            "out",
            f"{out} already holds a run ({', '.join(found)}); continue it with --resume {out}, replace it with "
            "--overwrite, or choose another --out",
        )


def _context(config: PPOConfig, *, callback, callback_every, env, env_params, network) -> TrainContext:
    every = callback_every or max(1, config.num_updates // 50)
    return make_context(config, env, env_params, callback, every, network)


def _with_loggers(callback: Callable | None, loggers: Sequence) -> Callable | None:
    """The program's host callback: the caller's, then every logger's `log`."""
    if not loggers:
        return callback

    def report(update, metrics):
        if callback is not None:
            callback(update, metrics)
        count = int(np.max(np.asarray(update)))
        for logger in loggers:
            logger.log(count, metrics)

    return report


def plan_run(
    config: PPOConfig | None,
    *,
    out: str | Path | None = None,
    seeds: int | Sequence[int] = 1,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    shard_envs: bool = False,
    callback: Callable | None = None,
    callback_every: int | None = None,
    env: Any = None,
    env_params: Any = None,
    network: Any = None,
    loggers: Sequence = (),
) -> RunPlan:
    """Check a run request and resolve its environment and policy; raises `ConfigError`,
    `CheckpointError` or `RunFileError` naming the problem before anything is compiled or written."""
    for name, value in (("checkpoint_every", checkpoint_every), ("keep", keep)):
        _positive(name, value)
    loggers = tuple(loggers)
    make_ctx = functools.partial(
        _context,
        callback=_with_loggers(callback, loggers),
        callback_every=callback_every,
        env=env,
        env_params=env_params,
        network=network,
    )
    if resume is not None:
        given = {"config": config, "out": out, "shard_envs": shard_envs, "seeds": seeds != 1, "overwrite": overwrite}
        named = [name for name, value in given.items() if value is not None and value is not False]
        if named:
            raise ConfigError(
                "resume", f"a resumed run keeps its config, seeds, layout and folder; remove {', '.join(named)}"
            )
        return _plan_resume(Path(resume), make_ctx, checkpoint_every, keep)._replace(loggers=loggers)
    if config is None:
        raise ConfigError("config", "give a PPOConfig, or resume= a run folder")
    seed_list = list(resolve_seeds(config, seeds))
    if shard_envs and len(seed_list) != 1:
        raise ConfigError("seeds", "--shard-envs trains one run (its envs split over the devices); remove --seeds")
    runner = (EnvShardedRun if shard_envs else SeedRuns)(make_ctx(config), seed_list)
    if overwrite and out is not None:
        files.remove_run_files(Path(out))
    refuse_used_run_dir(out)
    folder = files.prepare_dir(out or files.default_run_dir(config.env))  # created once the env is known
    return RunPlan(config, seed_list, folder, runner, False, 0, checkpoint_every, keep, loggers)


def _plan_resume(run_dir: Path, make_ctx: Callable, checkpoint_every: int | None, keep: int | None) -> RunPlan:
    """The plan of a resumed run: config, seeds and layout from its newest checkpoint, or, for a
    run stopped before its first checkpoint, from its `config.json` (starting at update 0)."""
    if not run_dir.is_dir():
        raise ConfigError("resume", f"run folder {run_dir} does not exist")
    store = RunCheckpoints(run_dir, create=False) if (run_dir / CHECKPOINT_DIR).is_dir() else None
    if store is None or store.latest_update() is None:
        return _plan_restart(run_dir, make_ctx, checkpoint_every, keep)
    meta = store.read_meta()
    config = config_from_meta(meta)
    seeds = list(meta["seeds"])
    runner = RUNNERS[meta.get("layout", "seeds")](make_ctx(config), seeds)
    folder = files.prepare_dir(run_dir)
    return RunPlan(config, seeds, folder, runner, True, int(meta["update"]), checkpoint_every, keep)


def _plan_restart(run_dir: Path, make_ctx: Callable, checkpoint_every: int | None, keep: int | None) -> RunPlan:
    """A run folder without a checkpoint (its run failed or was aborted before the first one):
    the same run again from update 0, with the config and seeds of its `config.json`."""
    path = run_dir / "config.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoint found in {run_dir / CHECKPOINT_DIR} , no config.json: nothing to resume")
    record = files.read_json(path, "the run's config")
    config, seeds, shard_envs = files.config_record(record, path)
    runner = (EnvShardedRun if shard_envs else SeedRuns)(make_ctx(config), seeds)
    files.remove_run_files(run_dir, keep=("config.json",))
    return RunPlan(config, seeds, files.prepare_dir(run_dir), runner, False, 0, checkpoint_every, keep)


class _Chunks:
    """The chunk loop's mutable record: compiled programs by length, metrics and timings.
    `timing["compile"]` is the wall time the loop waited for programs (a program compiled in a
    thread while `init` compiled counts once)."""

    def __init__(self):
        self.programs: dict[int, Any] = {}
        self.pending: dict[int, tuple[threading.Thread, dict]] = {}
        self.metrics: dict[str, list[np.ndarray]] = {}
        self.timing = {"compile": 0.0, "run": 0.0, "save": 0.0, "saves": 0}
        self.cache_counts = compile_cache.counts()  # the persistent cache's hits and misses before

    def compile(self, build: Callable[[], Any]) -> Any:
        """`build()`, timed as compile time."""
        t0 = time.perf_counter()
        program = build()
        self.timing["compile"] += time.perf_counter() - t0
        return program

    def compile_ahead(self, plan: RunPlan, abstract_state, hparams, n: int) -> None:
        """Start compiling the `n`-update chunk program from the state's shapes in a thread."""
        box: dict[str, Any] = {}

        def build():
            try:
                box["program"] = plan.runner.program(abstract_state, hparams, n)
            except BaseException as err:  # re-raised in the loop's thread
                box["error"] = err

        thread = threading.Thread(target=build, name="ppo_jax-compile", daemon=True)
        thread.start()
        self.pending[n] = (thread, box)

    def program(self, plan: RunPlan, state, hparams, n: int):
        if n in self.pending:
            thread, box = self.pending.pop(n)
            self.compile(thread.join)
            if "error" in box:
                raise box["error"]
            self.programs[n] = box["program"]
        if n not in self.programs:
            self.programs[n] = self.compile(lambda: plan.runner.program(state, hparams, n))
        return self.programs[n]

    def cache_hit(self) -> bool:
        """Whether every program compiled here came from the persistent cache."""
        hits, misses = (now - before for now, before in zip(compile_cache.counts(), self.cache_counts, strict=True))
        return hits > 0 and misses == 0

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append(np.asarray(v))

    def joined(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.metrics.items()}


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
    record = {**plan.config.to_dict(), "seeds": plan.seeds, "shard_envs": plan.runner.layout == "shard_envs"}
    files.write_json(plan.out / "config.json", record)
    abstract = plan.runner.abstract_state(hparams)
    if abstract is not None:  # the first chunk compiles while init does
        chunks.compile_ahead(plan, abstract, hparams, _chunk_length(plan, 0))
    state = chunks.compile(lambda: plan.runner.init(hparams))
    cfg = plan.config
    steps = f"{cfg.env_steps:,} steps"
    if cfg.env_steps != cfg.total_timesteps:
        steps += f" (total_timesteps {cfg.total_timesteps:,} rounded down to whole batches of {cfg.batch_size:,})"
    notify("start", f"training {plan.config.env}: {len(plan.seeds)} seed(s) x {steps} -> {plan.out}")
    return state


def _chunk_length(plan: RunPlan, done: int) -> int:
    """Updates in the chunk after `done`: chunks end on multiples of the checkpoint interval."""
    total = plan.config.num_updates
    chunk = min(plan.checkpoint_every or total, total)
    return min(chunk - done % chunk, total - done)


def _train_chunks(plan: RunPlan, store: RunCheckpoints, chunks: _Chunks, stop: StopRequest, state, hparams):
    """Run chunks of updates to the end (or a stop request), saving at the checkpoint interval."""
    total, every = plan.config.num_updates, plan.checkpoint_every
    done = plan.saved_update
    while done < total:
        n = _chunk_length(plan, done)
        fn = chunks.program(plan, state, hparams, n)
        _preload()  # while the compiled program runs (it releases the GIL)
        t0 = time.perf_counter()
        new_state, metrics = jax.block_until_ready(fn(state, hparams))
        chunks.timing["run"] += time.perf_counter() - t0
        _check_finite(metrics, done, plan.seeds, store)
        state, done = new_state, done + n
        chunks.add(metrics)
        if every and (done % every == 0 or done == total):
            _save(plan, store, chunks, state, hparams)
        if stop.requested and done < total:
            if store.latest_update() != done:
                _save(plan, store, chunks, state, hparams)
            raise RunStopped(plan.out, done, total)
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


def export_policies(plan: RunPlan, state) -> bool:
    """One `policy-seed<S>.npz` per seed (state batched over runs); False (nothing written) for a
    user's policy family that cannot describe itself (`describe()`, see `policies.base`)."""
    ctx = plan.ctx
    if not hasattr(ctx.policy, "describe"):
        return False
    acting = Acting(ctx.policy, ctx.dist, ctx.rollout.spec)
    for s, seed in enumerate(plan.seeds):
        params = jax.tree.map(lambda x: x[s], state.params)  # noqa: B023
        stats = jax.tree.map(lambda x: x[s], state.env.obs_stats) if plan.config.normalize_obs else None  # noqa: B023
        export_policy(plan.out / f"policy-seed{seed}.npz", acting, params, stats, plan.config.env)
    return True


def _finish(plan: RunPlan, state, chunks: _Chunks) -> dict[str, Any]:
    state = jax.device_get(plan.runner.saved(state)._replace(key=None))  # NumPy from here: no JAX computations
    metrics = chunks.joined()
    steps_run = (plan.config.num_updates - plan.saved_update) * plan.config.batch_size * len(plan.seeds)
    summary = summarize(plan, state, metrics, chunks.timing, steps_run, chunks.cache_hit())
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
                state = _train_chunks(plan, store, chunks, stop, state, hparams)
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
    shard_envs (one run, envs over all devices), callback(update, metrics) and callback_every
    (progress from inside the program), notify(kind, message) (messages: start, resume, stop,
    abort, finished), handle_signals (SIGINT/SIGTERM stop at the next checkpoint; default True),
    env / env_params / network (a custom env or policy family), loggers (`runtime.loggers`
    TensorBoardLogger / WandbLogger, or your own with open/log/close; fed while the program runs).

    Raises `ConfigError` (bad input, before compiling), `CheckpointError`, `NonFiniteError`,
    `RunStopped` (stopped by a signal after saving a checkpoint) and `OSError`.
    """
    notify = options.pop("notify", None)
    handle_signals = options.pop("handle_signals", True)
    return execute(plan_run(config, **options), notify, handle_signals)
