"""The policy-gradient chain side by side: each objective of the registry
(`ppo_jax.core.objectives`) trained over the same seeds.

`compare(config, objectives, seeds)` trains one batched program per objective (the objective is a
static switch, so each is its own compile) and returns per-seed final returns and learning curves.
The programs are traced one after another and compiled concurrently (XLA compiles outside
Python's lock: on 2 CPU cores five arms compile in about half the time), then run one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax.config import OBJECTIVE_NAMES, PPOConfig, default_config
from ppo_jax.engine.train import make_train_batch
from ppo_jax.plugins import resolve_objective
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.files import final_returns, forward_fill
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


def compile_arms(configs: Sequence[PPOConfig], keys: jax.Array) -> tuple[list[Any], list[float]]:
    """One compiled `make_train_batch` program per config: lowered in turn, compiled concurrently.
    Returns the programs and each one's compile seconds (its lowering plus the shared wall time of
    the concurrent compiles)."""
    lowered, lower_seconds = [], []
    for cfg in configs:
        t0 = time.perf_counter()
        lowered.append(jax.jit(make_train_batch(cfg)).lower(keys))
        lower_seconds.append(time.perf_counter() - t0)
    options = [compiler_options(cfg.fast_paths) for cfg in configs]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(lowered)) as pool:
        programs = list(pool.map(lambda low, opt: low.compile(compiler_options=opt), lowered, options))
    shared = time.perf_counter() - t0
    return programs, [s + shared for s in lower_seconds]


def _silent(kind: str, message: str) -> None:
    return None


def compare(
    config: PPOConfig,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    seeds: Sequence[int] = tuple(range(8)),
    options: dict[str, Any] | None = None,
    notify: Callable[[str, str], None] | None = None,
) -> list[ObjectiveResult]:
    """Train every objective in `objectives` (names or references) over `seeds` (vmapped) and
    summarise each; `options`: values of the objectives' own fields (each arm takes its own).
    `notify(kind, message)` hears of each phase: compile, compiled, arm (an objective starts),
    arm_done (its seconds and final return)."""
    notify = notify or _silent
    configs = [objective_config(config, o, options) for o in objectives]  # validate all before compiling
    keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
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
        returns = forward_fill(np.asarray(out.metrics["episode_return"]))
        env_steps = np.asarray(out.metrics["env_steps"])[:, 0]
        finals = final_returns(np.asarray(out.metrics["episode_return"]))
        ci = bootstrap_ci(finals[np.isfinite(finals)]) if np.isfinite(finals).any() else None
        low, high = (ci.low, ci.high) if ci else (np.nan, np.nan)
        auc = float(np.nanmean(area_under_curve(env_steps, returns)))
        point = ci.point if ci else np.nan
        results.append(
            ObjectiveResult(objective, cfg, env_steps, returns, finals, point, low, high, auc, seconds, compiled_in)
        )
        notify("arm_done", f"{objective} ({i}/{len(configs)}): IQM {point:.1f} in {seconds:.1f} s")
    return results
