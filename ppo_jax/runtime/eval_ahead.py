"""A training run's evaluation, compiled while the run trains.

`ppo-jax train` and then `ppo-jax eval RUN` is how a user sees what a run learned; on a first run
most of the second command was compiling the evaluation. When the first chunk of a training run
is about to run (`executor.Record.running`), `start` begins a thread that keeps the evaluation
`ppo-jax eval RUN` runs by default (`eval_program.DEFAULT_EPISODES` episodes, mode actions) for
the run's final policies (`evaluation.keep_ahead`): its trace and XLA's compile use the core the
training leaves idle. The run's record waits for it (`join`) before writing the run's files, so
the run's compile count includes it. The evaluation then finds the program kept, as on a repeat;
a repeat of the same run finds it kept already and traces nothing.

It starts only where the evaluating process will look the program up under the same key: one
process, seeds laid out by `runners.SeedRuns`, a run whose policies are exported (eval can
rebuild the family from config.json), and no CPU devices added for the run's seeds (a CPU
process with several devices has settings a plain `ppo-jax eval` does not).
"""

from __future__ import annotations

import threading

import jax
import numpy as np

from ppo_jax.runtime import evaluation
from ppo_jax.runtime.eval_program import DEFAULT_EPISODES


def _zeros(x) -> np.ndarray:
    return np.zeros(x.shape, x.dtype)


def wanted(plan, exported: bool) -> bool:
    """Whether `ppo-jax eval` of the plan's folder will look up the program kept here."""
    if plan.out is None or not exported or jax.process_count() > 1 or plan.runner.layout != "seeds":
        return False
    return not (jax.default_backend() == "cpu" and jax.device_count() > 1)


def _keep(restored: evaluation.Restored, run_dir) -> None:
    try:
        evaluation.keep_ahead(restored, run_dir, DEFAULT_EPISODES, stochastic=False)
    except Exception:  # noqa: BLE001  a program not kept is built by `ppo-jax eval` itself, as before
        return


def start(plan, state, exported: bool) -> threading.Thread | None:
    """Start keeping the evaluation of the plan's run folder from the shapes of `state` (the
    run's state, leaves [S, ...]); the thread, or None where it would not be used (`wanted`)."""
    if not wanted(plan, exported):
        return None
    saved = plan.runner.saved(state)
    stats = jax.tree.map(_zeros, saved.env.obs_stats) if plan.config.normalize_obs else None
    restored = evaluation.Restored(
        plan.config, plan.ctx, plan.seeds, plan.config.num_updates, jax.tree.map(_zeros, saved.params), stats
    )
    thread = threading.Thread(target=_keep, args=(restored, plan.out), name="ppo_jax-eval-ahead", daemon=True)
    thread.start()
    return thread
