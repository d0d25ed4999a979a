"""The policy-gradient chain side by side: each objective of the registry
(`ppo_jax.core.objectives`) trained over the same seeds.

`compare(config, objectives, seeds)` trains one batched program per objective (the objective is a
static switch, so each is its own compile) and returns per-seed final returns and learning curves.
The programs are traced one after another and compiled concurrently (XLA compiles outside
Python's lock: on 2 CPU cores five arms compile in about half the time), then run one by one.
Each arm's seeds are split over the devices of the run mesh (`runtime.distributed`; CPU cores
exposed as devices, or GPUs), as a sweep's runs are: the most devices the seed count divides
over. Runs never communicate, so the results do not depend on the device count.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ppo_jax.config import OBJECTIVE_NAMES, PPOConfig, default_config
from ppo_jax.engine.train import make_train_batch
from ppo_jax.plugins import resolve_objective
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.distributed import check_divisible, gather, lowering_mesh, put_runs, run_mesh
from ppo_jax.runtime.files import final_returns, forward_fill, params_sha256
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
    seconds: float  # running the compiled program (all seeds)
    compile_seconds: float  # tracing and lowering this arm, plus the wall time of the concurrent compiles
    params_sha256: list | None = None  # per seed: SHA-256 of the final parameters (`files.params_sha256`)


def objective_config(base: PPOConfig, objective: str, options: dict[str, Any] | None = None) -> PPOConfig:
    """`base` with `objective` (a shipped name or a reference) and those of `options` that the
    objective declares; on-policy objectives get one epoch of one minibatch."""
    record = resolve_objective(objective)
    own = {f.name for f in record.fields}
    dropped = {"env", "num_epochs", "num_minibatches"} | {f.name for f in resolve_objective(base.objective).fields}
    fields = {k: v for k, v in base.to_dict().items() if k not in dropped or k in own}
    fields.update({k: v for k, v in (options or {}).items() if k in own})
    fields["objective"] = objective
    if not record.on_policy:
        fields.update(num_epochs=base.num_epochs, num_minibatches=base.num_minibatches)
    return default_config(base.env, **fields)


def arm_mesh(num_seeds: int) -> Mesh:
    """The run mesh an arm's seeds are split over: the most devices whose count divides the seeds."""
    return run_mesh(jax.devices()[: math.gcd(num_seeds, jax.device_count())])


def _train_arm(config: PPOConfig, key_data: jax.Array):
    """One arm's program: `train_batch` from raw key data [S, ...] (placed over the run mesh)."""
    return make_train_batch(config)(jax.random.wrap_key_data(key_data))


def compile_arms(configs: Sequence[PPOConfig], key_data: jax.Array) -> tuple[list[Any], list[float]]:
    """One compiled arm program per config: lowered in turn, compiled concurrently. Returns the
    programs and each one's compile seconds (its lowering plus the shared wall time of the
    concurrent compiles)."""
    lowered, lower_seconds = [], []
    mesh = key_data.sharding.mesh if isinstance(key_data.sharding, NamedSharding) else None
    for cfg in configs:
        t0 = time.perf_counter()
        with lowering_mesh(mesh):
            lowered.append(jax.jit(functools.partial(_train_arm, cfg)).lower(key_data))
        lower_seconds.append(time.perf_counter() - t0)
    options = [compiler_options(cfg.fast_paths) for cfg in configs]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(lowered)) as pool:
        programs = list(pool.map(lambda low, opt: low.compile(compiler_options=opt), lowered, options))
    shared = time.perf_counter() - t0
    return programs, [s + shared for s in lower_seconds]


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


def compare(
    config: PPOConfig,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    seeds: Sequence[int] = tuple(range(8)),
    options: dict[str, Any] | None = None,
    notify: Callable[[str, str], None] | None = None,
    mesh: Mesh | None = None,
) -> list[ObjectiveResult]:
    """Train every objective in `objectives` (names or references) over `seeds` (vmapped) and
    summarise each; `options`: values of the objectives' own fields (each arm takes its own).
    `mesh`: the devices each arm's seeds are split over (default `arm_mesh`; the seed count must
    divide over them).
    `notify(kind, message)` hears of each phase: compile, compiled, arm (an objective starts),
    arm_done (its seconds and final return)."""
    notify = notify or _silent
    configs = [objective_config(config, o, options) for o in objectives]  # validate all before compiling
    mesh = arm_mesh(len(seeds)) if mesh is None else mesh
    check_divisible(len(seeds), mesh.size, "seeds", "seeds")
    keys = put_runs(np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32)))), mesh)
    notify("compile", f"compiling {len(configs)} programs (concurrently)")
    programs, compile_seconds = compile_arms(configs, keys)
    notify("compiled", f"compiled {len(configs)} programs in {max(compile_seconds):.1f} s")
    results = []
    arms = zip(objectives, configs, programs, compile_seconds, strict=True)
    for i, (objective, cfg, program, compiled_in) in enumerate(arms, start=1):
        notify("arm", f"training {objective} ({i}/{len(configs)}): {len(seeds)} seeds x {cfg.env_steps:,} steps")
        start = time.perf_counter()
        out = jax.block_until_ready(program(keys))
        seconds = time.perf_counter() - start
        result = arm_result(objective, cfg, gather((out.metrics, out.state.params)), seconds, compiled_in)
        results.append(result)
        notify("arm_done", f"{objective} ({i}/{len(configs)}): IQM {result.iqm:.1f} in {seconds:.1f} s")
    return results
