"""The run driver: `run(config, out=..., seeds=..., ...)` trains a run into a run folder and
returns its summary. `ppo-jax train` is this function plus flag parsing and printing. The
request is checked and resolved first, before anything compiles (`runtime.planning`).

The plan runs through the executor (`runtime.executor`: chunks between checkpoints, exact resume,
stop signals, the NaN/Inf check); this module is the run's record writer (`TrainRecord`): the
files a run leaves (`config.json`, `metrics.csv`, `summary.json`, `curve.png`,
`policy-seed<S>.npz`; `checkpoints/` are the executor's).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import jax
import numpy as np

from ppo_jax.config import PPOConfig
from ppo_jax.engine.evaluate import Acting
from ppo_jax.errors import NonFiniteError, RunFileError
from ppo_jax.plugins import is_reference
from ppo_jax.runtime import compile_cache, eval_ahead, executor, files, plots
from ppo_jax.runtime.distributed import is_writer
from ppo_jax.runtime.executor import Chunks
from ppo_jax.runtime.planning import RunPlan, plan_run
from ppo_jax.runtime.policy_file import export_policy
from ppo_jax.runtime.signals import Notify


class TrainRecord:
    """`ppo-jax train`'s record writer: `config.json` before the first chunk; `summary.json`,
    `metrics.csv`, `curve.png` and `policy-seed<S>.npz` at the end (`_finish`)."""

    command = "ppo-jax train"
    stop_on_nonfinite = True

    def finished(self, plan: RunPlan, notify: Notify) -> dict | None:
        summary_path = plan.out / "summary.json"
        if not summary_path.exists():
            return None
        try:
            summary = files.read_json(summary_path, "the run's summary")
        except RunFileError as err:  # the final checkpoint still holds everything: write the files again
            notify("repair", f"{err}; writing the run's files again from its final checkpoint")
            return None
        total = plan.config.num_updates
        notify("finished", f"{plan.out} has finished all {total} updates; no updates were left to run")
        return summary

    def begin(self, plan: RunPlan, notify: Notify) -> None:
        if not is_writer():
            return
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

    ahead: threading.Thread | None = None  # compiling the run's evaluation (`eval_ahead`)

    def started(self, plan: RunPlan, notify: Notify) -> None:
        cfg = plan.config
        steps = f"{cfg.env_steps:,} steps"
        if cfg.env_steps != cfg.total_timesteps:
            steps += f" (total_timesteps {cfg.total_timesteps:,} rounded down to whole batches of {cfg.batch_size:,})"
        notify("start", f"training {plan.config.env}: {len(plan.seeds)} seed(s) x {steps} -> {plan.out}")

    def running(self, plan: RunPlan, state) -> None:
        self.ahead = eval_ahead.start(plan, state, exported=policy_description(plan.ctx) is not None)

    def nonfinite(self, plan: RunPlan, store, err: NonFiniteError) -> None:
        if is_writer() and store.latest_update() is None:  # the folder says why it has no checkpoint
            files.write_json(plan.out / files.NONFINITE_FILE, {"reason": "nonfinite", "message": str(err)})

    def finish(self, plan: RunPlan, state, chunks: Chunks) -> dict[str, Any]:
        if self.ahead is not None:  # its compile counts as the run's
            chunks.compile(self.ahead.join)
            chunks.count_compiles()
        return _finish(plan, state, chunks)


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


def _finish(plan: RunPlan, state, chunks: Chunks) -> dict[str, Any]:
    state = jax.device_get(plan.runner.saved(state)._replace(key=None))  # NumPy from here: no JAX computations
    metrics = chunks.joined()
    steps_run = (plan.config.num_updates - plan.saved_update) * plan.config.batch_size * len(plan.seeds)
    summary = summarize(plan, state, metrics, chunks.timing, steps_run, chunks.cache_hit())
    summary["compiles"] = chunks.compiles
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


def execute(plan: RunPlan, notify: Notify | None = None, handle_signals: bool = True) -> dict[str, Any]:
    """Train `plan` to its end and write the run folder; returns the summary. Raises `RunStopped`
    after saving when a stop signal arrived, `NonFiniteError` on NaN/Inf."""
    return executor.execute(plan, TrainRecord(), notify, handle_signals)


def run(config: PPOConfig | None = None, **options: Any) -> dict[str, Any]:
    """Train PPO into a run folder and return the summary that `summary.json` holds.

    options: out (folder; default runs/<env>-<time>), seeds (a count or the seeds), checkpoint_every
    and keep (orbax checkpoints), resume (a run folder to continue exactly; no config then),
    shard_envs (one run, envs over all devices), callback(update [S], metrics [S]) and
    callback_every (progress: called by the host between chunks of the compiled program, for every
    callback_every-th update and the last, in order; default num_updates // 50; a report's
    episodes, episode_return and episode_length cover the episodes that ended since the previous
    report, its other metrics are the reported update's),
    notify(kind, message) (messages: start, resume, running (compiled; training to the first report),
    stop, abort, finished), handle_signals
    (SIGINT/SIGTERM stop at the next checkpoint; default True), env / env_params / network (a
    custom env or policy family), loggers (`runtime.loggers` TensorBoardLogger / WandbLogger, or
    your own with open/log/close; fed with the callback's reports).

    Raises `ConfigError` (bad input, before compiling), `CheckpointError`, `NonFiniteError`,
    `RunStopped` (stopped by a signal after saving a checkpoint) and `OSError`.
    """
    notify = options.pop("notify", None)
    handle_signals = options.pop("handle_signals", True)
    return execute(plan_run(config, **options), notify, handle_signals)
