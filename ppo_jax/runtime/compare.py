"""The policy-gradient chain side by side: each objective of the registry
(`ppo_jax.core.objectives`) trained over the same seeds.

A comparison is O objectives × S seeds. Each arm (one objective) is a train plan of one config ×
S seeds (`runners.SeedRuns`) run through the executor (`runtime.executor`), so an arm with a
folder is a training run's folder, `<out>/arms/<objective>/` (what `ppo-jax train` writes:
config.json, metrics.csv, summary.json, checkpoints, policy files; `ppo-jax eval`,
`train --resume` and `load_policy` read it), with checkpoints, stop signals and exact resume.
The comparison's own files are `compare_plan.json` (what `--resume` rebuilds it from, written
first; the plan: `runtime.compare_plan`), `compare.json` and `compare.png`
(`records.write_compare`). Every arm's programs (initialisation and chunk) start compiling at
once, one thread each (XLA compiles outside Python's lock), so later arms compile while earlier
ones train. Each
arm's seeds are split over the devices of the run mesh (`runtime.distributed`; CPU cores
exposed as devices, or GPUs): the most devices the seed count divides over. Runs never
communicate, so the results do not depend on the device count.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from ppo_jax.config import OBJECTIVE_NAMES, PPOConfig
from ppo_jax.engine.train import make_context
from ppo_jax.errors import RunStopped
from ppo_jax.runtime import files, folder_lock
from ppo_jax.runtime.checkpoint import CHECKPOINT_DIR
from ppo_jax.runtime.compare_plan import (  # noqa: F401  (re-exported with the comparison)
    ARMS_DIR,
    COMPARE_FILES,
    PLAN_FILE,
    ComparePlan,
    arm_dir_name,
    arm_mesh,
    objective_config,
    plan_compare,
    plan_compare_resume,
)
from ppo_jax.runtime.distributed import gather
from ppo_jax.runtime.driver import TrainRecord
from ppo_jax.runtime.executor import chunk_capacity, execute
from ppo_jax.runtime.files import final_returns, forward_fill, params_sha256
from ppo_jax.runtime.planning import RunPlan, plan_run
from ppo_jax.runtime.records import write_compare
from ppo_jax.runtime.runners import SeedRuns, init_runs
from ppo_jax.runtime.signals import StopRequest
from ppo_jax.runtime.stats import area_under_curve, bootstrap_ci


class ObjectiveResult(NamedTuple):
    """One objective over seeds: curves are [updates, seeds] (returns forward-filled)."""

    objective: str
    config: PPOConfig
    env_steps: np.ndarray  # [updates]
    returns: np.ndarray  # [updates, seeds]
    final_returns: np.ndarray  # [seeds]
    iqm: float
    ci_low: float
    ci_high: float
    auc: float  # mean over seeds of the area under the return curve per env step
    seconds: float  # running the chunk programs (all seeds)
    compile_seconds: float  # the wall time the arm waited for its programs to compile
    params_sha256: list | None = None  # per seed: SHA-256 of the final parameters (`files.params_sha256`)
    run_dir: str | None = None  # the arm's run folder, relative to the comparison's folder


def arm_result(objective: str, cfg: PPOConfig, outputs, seconds: float, compile_seconds: float) -> ObjectiveResult:
    """One arm's summary from its gathered (metrics [U, S], params [S, ...]): curves, final
    returns, the IQM with its bootstrap CI, the AUC and every seed's parameter digest."""
    metrics, params = outputs
    returns = forward_fill(metrics["episode_return"])
    env_steps = metrics["env_steps"][:, 0]
    finals = final_returns(metrics["episode_return"])
    ci = bootstrap_ci(finals[np.isfinite(finals)]) if np.isfinite(finals).any() else None
    low, high, point = (ci.low, ci.high, ci.point) if ci else (np.nan, np.nan, np.nan)
    auc = float(np.nanmean(area_under_curve(env_steps, returns)))
    sha = [params_sha256(jax.tree.map(lambda x: x[s], params)) for s in range(finals.shape[0])]  # noqa: B023
    return ObjectiveResult(
        objective, cfg, env_steps, returns, finals, point, low, high, auc, seconds, compile_seconds, sha
    )


def _silent(kind: str, message: str) -> None:
    return None


class ArmRuns(SeedRuns):
    """An arm's S seeds (`SeedRuns` on the comparison's mesh) whose programs (initialisation and
    chunk) can be compiled ahead, on threads, while earlier arms train."""

    def __init__(self, ctx, seeds: Sequence[int], mesh: Mesh | None):
        super().__init__(ctx, list(seeds), mesh)
        self.ahead: tuple[int, Future, Future] | None = None  # (chunk length, init program, chunk program)

    def compile_ahead(self, length: int) -> list[tuple[Future, Callable]]:
        """The compiles of the initialisation and of the chunk program of `length` updates (from
        the state's shapes), as jobs for the compiling threads (`_compile_in_threads`), each with
        the future `init` or `program` waits for."""
        hparams = self.hparams(self.ctx.config)
        init, chunk = Future(), Future()
        self.ahead = (length, init, chunk)
        seeds = self.place(np.asarray(self.seeds, np.uint32))
        compile_init = functools.partial(_compile_init, self.ctx, seeds, hparams)
        compile_chunk = functools.partial(SeedRuns.program, self, self.abstract_state(hparams), hparams, length)
        return [(init, compile_init), (chunk, compile_chunk)]

    def init(self, hparams):
        if self.ahead is None:
            return super().init(hparams)
        seeds = self.place(np.asarray(self.seeds, np.uint32))
        return self.place(self.ahead[1].result()(seeds, hparams))  # placed as `SeedRuns.init` places it

    def program(self, state, hparams, length: int):
        if self.ahead is not None and self.ahead[0] == length:
            (_, _, chunk), self.ahead = self.ahead, None
            return chunk.result()
        return super().program(state, hparams, length)


def _compile_init(ctx, seeds, hparams):
    """`runners.init_runs` compiled for the placed seeds [S] and hyperparameters."""
    return jax.jit(functools.partial(init_runs, ctx)).lower(seeds, hparams).compile()


class ArmRecord(TrainRecord):
    """An arm's record writer: a training run's folder (`driver.TrainRecord`), and the arm's
    `ObjectiveResult` from the final state and metrics (`result`). An arm found finished by a
    resumed comparison is read again from its final checkpoint; its files are kept."""

    command = "ppo-jax compare"

    def __init__(self, objective: str):
        self.objective = objective
        self.earlier: dict | None = None  # the summary of an arm that had finished before
        self.result: ObjectiveResult | None = None

    def finished(self, plan: RunPlan, notify) -> None:
        self.earlier = super().finished(plan, _silent)
        return None  # the executor restores the final checkpoint: exact curves and parameters

    def begin(self, plan: RunPlan, notify) -> None:
        if plan.out is not None:
            super().begin(plan, notify)

    def started(self, plan: RunPlan, notify) -> None:
        return None

    def running(self, plan: RunPlan, state) -> None:
        return None  # arms are compared, not evaluated one by one: no evaluation compiled ahead

    def nonfinite(self, plan: RunPlan, store, err) -> None:
        if plan.out is not None:
            super().nonfinite(plan, store, err)

    def finish(self, plan: RunPlan, state, chunks) -> dict[str, Any]:
        summary = self.earlier
        if summary is None:
            summary = super().finish(plan, state, chunks) if plan.out is not None else {}
        run_s = summary.get("run_seconds", chunks.timing["run"])
        compile_s = summary.get("compile_seconds", chunks.timing["compile"])
        outputs = (chunks.joined(), gather(state.params))
        result = arm_result(self.objective, plan.config, outputs, run_s, compile_s)
        self.result = result._replace(run_dir=None if plan.out is None else f"{ARMS_DIR}/{plan.out.name}")
        return summary


def _holds_run(folder: Path) -> bool:
    return (folder / "config.json").exists() or (folder / CHECKPOINT_DIR).is_dir()


def plan_arm(plan: ComparePlan, i: int) -> RunPlan:
    """Arm `i`'s train plan: 1 config × S seeds into `<out>/arms/<objective>/` (resumed from
    there when the comparison is resumed and the arm had started)."""
    cfg, folder = plan.configs[i], plan.arm_dir(i)
    if folder is None:
        ctx = make_context(cfg)
        return RunPlan(ctx.config, list(plan.seeds), None, ArmRuns(ctx, plan.seeds, plan.mesh), False, 0, None, None)
    options = dict(checkpoint_every=plan.checkpoint_every, keep=plan.keep, seed_runs=_arm_runs(plan.mesh))
    if plan.resume and _holds_run(folder):
        return plan_run(None, resume=folder, **options)
    # a fresh arm (a resumed comparison's arm that had not started is started again)
    return plan_run(cfg, out=folder, seeds=list(plan.seeds), overwrite=True, **options)


def _arm_runs(mesh: Mesh) -> Callable:
    return functools.partial(ArmRuns, mesh=mesh)


def _stopped(plan: ComparePlan, objective: str, update: int, total: int) -> RunStopped:
    err = RunStopped(plan.out, update, total, command="ppo-jax compare")
    err.args = (f"stopped {objective} at update {update}/{total}; resume with: ppo-jax compare --resume {plan.out}",)
    return err


def _except_resume(notify: Callable[[str, str], None], kind: str, message: str) -> None:
    """`notify` without the executor's "resuming" line (an arm read again, not resumed)."""
    if kind != "resume":
        notify(kind, message)


def _compile_in_threads(jobs: list[tuple[Future, Callable]]) -> None:
    """Run every job on a daemon thread of its own, its result into its future; a job whose
    future was cancelled before it started is skipped (daemon threads: a stopped comparison exits
    without waiting for the compiles under way)."""

    def work(future: Future, job: Callable) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as err:  # re-raised where the arm waits for its program
            future.set_exception(err)

    for future, job in jobs:
        threading.Thread(target=work, args=(future, job), name="ppo_jax-compile", daemon=True).start()


def _compile_ahead(arms: list[RunPlan]) -> list[Future]:
    """Start compiling the programs of every arm with updates left, one thread each: one
    program's tracing (which holds Python's lock) overlaps the others' XLA compiles (which do not).
    On 2 cores a tiny 5-objective CartPole comparison took 93 s so and 139 s on 2 threads."""
    todo = [run for run in arms if run.saved_update < run.config.num_updates]
    jobs = [job for run in todo for job in run.runner.compile_ahead(chunk_capacity(run))]
    _compile_in_threads(jobs)
    return [future for future, _ in jobs]


def _run_arm(plan: ComparePlan, i: int, run: RunPlan, stop: StopRequest, notify: Callable) -> ObjectiveResult:
    """Arm `i` through the executor (an arm finished earlier is read again from its final checkpoint)."""
    objective, where = plan.objectives[i], f"({i + 1}/{len(plan.objectives)})"
    if run.saved_update >= run.config.num_updates:
        notify("arm", f"reading {objective} {where}, finished earlier")
        notify = functools.partial(_except_resume, notify)
    else:
        notify("arm", f"training {objective} {where}: {len(plan.seeds)} seeds x {run.config.env_steps:,} steps")
    record = ArmRecord(objective)
    try:
        execute(run, record, notify, stop=stop)
    except RunStopped as err:
        raise _stopped(plan, objective, err.update, err.num_updates) from None
    notify("arm_done", f"{objective} {where}: IQM {record.result.iqm:.1f}")
    return record.result


def run_compare(
    plan: ComparePlan, notify: Callable[[str, str], None] | None = None, handle_signals: bool = False
) -> list[ObjectiveResult]:
    """Train every arm of `plan` through the executor and write the comparison's folder (when it
    has one); returns one `ObjectiveResult` per objective, in the plan's order.

    `handle_signals`: SIGINT/SIGTERM stop at the next checkpoint of the arm training (or before the
    next arm) and raise `RunStopped`, whose message says how to resume. `notify(kind, message)`
    hears of each phase: compile, arm (an objective starts), arm_done (its seconds and IQM), and the
    executor's messages (resume, stop)."""
    try:
        return _run_compare(plan, notify or _silent, handle_signals)
    finally:
        folder_lock.release(plan.out)  # held since `plan_compare`


def _run_compare(plan: ComparePlan, notify: Callable[[str, str], None], handle_signals: bool) -> list[ObjectiveResult]:
    if plan.out is not None and not plan.resume:
        files.write_json(plan.out / PLAN_FILE, plan.request())
    arms = _plan_arms(plan)  # every folder checked (and held) before compiling
    results: list[ObjectiveResult] = []
    futures: list[Future] = []
    started = 0
    try:
        todo = sum(run.saved_update < run.config.num_updates for run in arms)
        if todo:
            notify("compile", f"compiling {todo} program{'s' if todo != 1 else ''} (concurrently)")
        futures = _compile_ahead(arms)
        with StopRequest(True, notify, handle_signals and plan.out is not None) as stop:
            for i, run in enumerate(arms):
                if stop.requested and run.saved_update < run.config.num_updates:
                    raise _stopped(plan, plan.objectives[i], run.saved_update, run.config.num_updates)
                started = i + 1  # its run releases its folder (`execute`)
                results.append(_run_arm(plan, i, run, stop, notify))
    finally:
        for future in futures:  # compiles not started yet are dropped
            future.cancel()
        _release(arms[started:])
    if plan.out is not None:
        write_compare(plan.out, plan.config, plan.seeds, results, plan.mesh.size)
    return results


def _plan_arms(plan: ComparePlan) -> list[RunPlan]:
    """Every arm's plan (each holds its folder until its run ends); none held if one fails."""
    arms: list[RunPlan] = []
    try:
        for i in range(len(plan.objectives)):
            arms.append(plan_arm(plan, i))
    except BaseException:
        _release(arms)
        raise
    return arms


def _release(runs: Sequence[RunPlan]) -> None:
    """Let go of the folders of arms that will not run."""
    for run in runs:
        folder_lock.release(run.out)


def compare(
    config: PPOConfig,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    seeds: Sequence[int] = tuple(range(8)),
    options: dict[str, Any] | None = None,
    notify: Callable[[str, str], None] | None = None,
    mesh: Mesh | None = None,
    *,
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    overwrite: bool = False,
    handle_signals: bool = False,
) -> list[ObjectiveResult]:
    """Train every objective in `objectives` (names or references) over `seeds` (vmapped) and
    summarise each; `options`: values of the objectives' own fields (each arm takes its own).
    `mesh`: the devices each arm's seeds are split over (default `arm_mesh`; the seed count must
    divide over them). `out`: the comparison's folder (`compare.json`, `compare.png`, one training
    run's folder per arm under `arms/`, checkpoints every `checkpoint_every` updates, the newest
    `keep` kept); without it nothing is written. `notify`, `handle_signals`: as `run_compare`.
    A stopped comparison continues with `run_compare(plan_compare_resume(out))`."""
    plan = plan_compare(
        config,
        objectives,
        seeds,
        options,
        mesh,
        out=out,
        checkpoint_every=checkpoint_every,
        keep=keep,
        overwrite=overwrite,
    )
    return run_compare(plan, notify, handle_signals)
