"""Sweeps: seeds × hyperparameter configurations trained as one compiled program.

A sweep is C configurations (values of traced `Hyperparams` fields) × S seeds = R runs. Run
r = c·S + s trains configuration c from key `jax.random.key(seeds[s])`, the run that
`ppo-jax train --seed seeds[s]` with those values trains (equal up to float32 rounding, which
depends on the batch size). All R runs go through one program, `jax.vmap`-ed over a
`Hyperparams` pytree with leaves [K] and K keys; when R runs do not fit in memory they are run
K at a time through that same compiled program (the last batch padded), so the number of
compiles does not grow with the number of batches.

Only traced fields can be swept: static fields (`STATIC_FIELDS`) set array shapes or Python
branches and are compiled into the program. Every mistake raises `ConfigError` before compiling.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import (
    STATIC_FIELDS,
    TRACED_FIELDS,
    TRACED_RANGES,
    ConfigError,
    Hyperparams,
    PPOConfig,
    check_traced_value,
    resolve_seeds,
)
from ppo_jax.core.objectives import OBJECTIVES, objectives_reading
from ppo_jax.engine.train import METRIC_NAMES, TrainContext, TrainState, init_state, make_context, run_updates
from ppo_jax.runtime import stats
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.distributed import RUN_AXIS, gather, put_runs, run_mesh
from ppo_jax.runtime.files import final_returns

Configuration = dict[str, float]  # values of some traced fields; the rest come from the config
DISTRIBUTIONS = ("uniform", "loguniform")
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Distribution(NamedTuple):
    """A random-search distribution over one traced field: uniform(low, high) or loguniform(low, high)."""

    kind: str
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.kind}({self.low:g},{self.high:g})"


# ---------------------------------------------------------------------------------------------
# Parsing and validation (all before any compile)


def _split_assignment(text: str, flag: str, example: str) -> tuple[str, str]:
    name, sep, rhs = text.partition("=")
    name, rhs = name.strip(), rhs.strip()
    if not sep or not name or not rhs:
        raise ConfigError(flag, f"expected NAME=VALUES, e.g. {example!r}; got {text!r}")
    return name, rhs


def _number(text: str, name: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(name, f"{text.strip()!r} is not a number (in {source!r})") from None
    return value


def parse_grid(texts: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Parse `NAME=V1,V2,...` items (one per --grid flag) into {name: values}; names are checked."""
    grid: dict[str, tuple[float, ...]] = {}
    for text in texts:
        name, rhs = _split_assignment(text, "grid", "lr=1e-4,3e-4")
        parts = rhs.split(",")
        check_sweepable(name, parts)
        if name in grid:
            raise ConfigError(name, "given twice in --grid; list all its values in one NAME=V1,V2 item")
        if any(not p.strip() for p in parts):
            raise ConfigError(name, f"empty value in {text!r}; expected comma-separated numbers, e.g. lr=1e-4,3e-4")
        grid[name] = tuple(_number(p, name, text) for p in parts)
    return grid


_DIST_RE = re.compile(r"^\s*([a-z]+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*$")


def parse_random(texts: Sequence[str]) -> dict[str, Distribution]:
    """Parse `NAME=uniform(a,b)` / `NAME=loguniform(a,b)` items (one per --random flag)."""
    dists: dict[str, Distribution] = {}
    for text in texts:
        name, rhs = _split_assignment(text, "random", "lr=loguniform(1e-5,1e-2)")
        check_sweepable(name)
        if name in dists:
            raise ConfigError(name, "given twice in --random")
        match = _DIST_RE.match(rhs)
        if not match or match.group(1) not in DISTRIBUTIONS:
            raise ConfigError(name, f"expected {' or '.join(d + '(LOW,HIGH)' for d in DISTRIBUTIONS)}, got {rhs!r}")
        kind = match.group(1)
        dists[name] = Distribution(kind, _number(match.group(2), name, text), _number(match.group(3), name, text))
    return dists


def check_sweepable(name: str, values: Sequence[str] = ()) -> None:
    """Raise `ConfigError` unless `name` is a traced field, saying why static fields cannot be swept."""
    if name in TRACED_FIELDS:
        return
    if name in STATIC_FIELDS:
        flag = "--" + name.replace("_", "-")
        shown = [v.strip() for v in values][:2] or ["A", "B"]
        runs = ", then ".join(f"'ppo-jax sweep {flag} {v} ...'" for v in shown)
        raise ConfigError(
            name,
            "cannot be swept: it is a static field (it sets array shapes or a Python branch), so it is "
            f"compiled into the program and cannot be vmapped over. Run a separate sweep per value instead: {runs}. "
            f"Sweepable (traced) fields: {', '.join(TRACED_FIELDS)}",
        )
    close = difflib.get_close_matches(name, TRACED_FIELDS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(name, f"unknown field; {hint}sweepable fields: {', '.join(TRACED_FIELDS)}")


def check_distribution(name: str, dist: Distribution) -> None:
    """Both ends of `dist` must be allowed values of `name`, with low < high (and low > 0 for loguniform)."""
    if not dist.low < dist.high:
        raise ConfigError(name, f"{dist}: LOW must be less than HIGH")
    if dist.kind == "loguniform" and dist.low <= 0:
        raise ConfigError(name, f"{dist}: loguniform needs LOW > 0")
    for end in (dist.low, dist.high):
        _check_value(name, end, f"{dist} reaches {end:g}, which is")


def _check_value(name: str, value: float, where: str) -> None:
    try:
        check_traced_value(name, value)
    except ConfigError as err:
        low, high, inclusive = TRACED_RANGES[name]
        rng = f"{'[' if inclusive else '('}{low:g}, {high:g}]"
        raise ConfigError(name, f"{where} outside the allowed range {rng}") from err


def inactive_fields(config: PPOConfig, discrete: bool) -> dict[str, str]:
    """Traced fields that cannot change training under `config`'s static choices, with the reason
    (read off the objective's record, `core.objectives.Objective.reads`)."""
    reads = OBJECTIVES[config.objective].reads(config)
    out = {}
    for name in TRACED_FIELDS:
        if name == "init_log_std" and discrete:
            out[name] = f"it only acts on continuous action spaces and {config.env} has discrete actions"
        elif name not in reads:
            users = [o for o in objectives_reading(name) if o != config.objective]
            where = f"--objective {' or '.join(users)}" if users else "another configuration"
            out[name] = f"it only acts with {where}; this sweep uses {config.objective}"
    return out


def grid_configurations(grid: Mapping[str, Sequence[float]]) -> list[Configuration]:
    """Cartesian product of `grid` {name: values}, the last name varying fastest."""
    names = list(grid)
    for name, values in grid.items():
        seen = [float(v) for v in values]
        dup = next((v for i, v in enumerate(seen) if v in seen[:i]), None)
        if dup is not None:
            raise ConfigError(name, f"value {dup:g} is listed twice in the grid")
    return [dict(zip(names, map(float, values), strict=True)) for values in itertools.product(*grid.values())]


def sample_configurations(dists: Mapping[str, Distribution], samples: int, seed: int = 0) -> list[Configuration]:
    """`samples` independent draws from `dists`, from a numpy Generator seeded with `seed`.

    uniform(a, b): a + (b − a)·u; loguniform(a, b): exp(log a + (log b − log a)·u); u ~ U[0, 1).
    """
    if samples < 1:
        raise ConfigError("samples", f"must be a positive integer, got {samples}")
    rng = np.random.default_rng(seed)
    u = rng.random((samples, len(dists)))
    out = []
    for row in u:
        point = {}
        for (name, d), v in zip(dists.items(), row, strict=True):
            if d.kind == "loguniform":
                point[name] = float(math.exp(math.log(d.low) + (math.log(d.high) - math.log(d.low)) * v))
            else:
                point[name] = float(d.low + (d.high - d.low) * v)
        out.append(point)
    return out


def make_configurations(
    grid: Mapping[str, Sequence[float]] | None = None,
    random: Mapping[str, Distribution] | None = None,
    samples: int = 0,
    seed: int = 0,
) -> list[Configuration]:
    """Configurations of a grid, a random search, or both (every grid point × every sample)."""
    grid, random = dict(grid or {}), dict(random or {})
    both = sorted(set(grid) & set(random))
    if both:
        raise ConfigError(both[0], "is both in --grid and in --random; sweep it one way")
    for name, dist in random.items():
        check_sweepable(name)
        check_distribution(name, dist)
    if random and samples < 1:
        raise ConfigError("samples", f"a random search needs --samples N >= 1, got {samples}")
    if not random and samples:
        raise ConfigError("samples", "--samples needs at least one --random NAME=DIST")
    if not grid and not random:
        raise ConfigError("grid", "the sweep is empty: give --grid NAME=V1,V2 and/or --random NAME=DIST")
    points = grid_configurations(grid) if grid else [{}]
    draws = sample_configurations(random, samples, seed) if random else [{}]
    return [{**g, **r} for g in points for r in draws]


def check_configurations(config: PPOConfig, configurations: Sequence[Mapping[str, float]]) -> tuple[str, ...]:
    """Validate every configuration against `config`; return the swept names (in first-seen order)."""
    if isinstance(configurations, Mapping):
        raise ConfigError("grid", "expected a list of configurations; use grid_configurations for {name: values}")
    if len(configurations) == 0:
        raise ConfigError("grid", "the sweep has no configurations")
    names: dict[str, None] = {}
    for point in configurations:
        if not point:
            continue
        for name, value in point.items():
            check_sweepable(name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ConfigError(name, f"sweep values must be numbers, got {value!r}")
            _check_value(name, float(value), f"value {float(value):g} in the sweep is")
            names[name] = None
    if not names:
        raise ConfigError("grid", "the sweep sets no hyperparameter; give at least one NAME=V1,V2")
    return tuple(names)


def run_hyperparams(config: PPOConfig, configurations: Sequence[Mapping[str, float]], num_seeds: int) -> Hyperparams:
    """Host-side `Hyperparams` with float32 leaves [C·S]: run r = c·S + s gets configuration c."""
    base = {n: float(getattr(config, n)) for n in TRACED_FIELDS}
    columns = {n: [float(point.get(n, base[n])) for point in configurations] for n in TRACED_FIELDS}
    return Hyperparams(**{n: np.repeat(np.asarray(v, np.float32), num_seeds) for n, v in columns.items()})


# ---------------------------------------------------------------------------------------------
# Planning: how many runs go through the program at once


def device_memory_bytes(device: Any = None) -> int:
    """Memory free for a program on `device`: the accelerator's limit minus what is in use, or on
    the CPU the host's available memory (MemAvailable)."""
    device = device or jax.devices()[0]
    try:
        mem = device.memory_stats() or {}
    except Exception:  # backends without memory statistics
        mem = {}
    if "bytes_limit" in mem:
        return int(mem["bytes_limit"]) - int(mem.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def run_memory_estimate(config: PPOConfig, obs_size: int, action_dim: int, num_params: int) -> int:
    """Upper estimate of the device bytes one run needs inside the program (float32 words × 4).

    Counts the rollout buffer [T, N] (twice the observation: s_t and s'_t), the batch and its
    shuffled copies, the activations of one minibatch forward and backward (for any policy
    family: a few layers of width √num_params, the width of a square layer with that many
    parameters), parameters with Adam moments and gradients, and the per-update metrics; then
    doubles it for the temporaries XLA keeps alive. `run_sweep` checks the compiled program's own
    memory analysis against it.
    """
    rollout = config.batch_size * (2 * obs_size + action_dim + 8)
    batch = 3 * config.batch_size * (obs_size + action_dim + 4)
    activations = 2 * 4 * config.minibatch_size * 4 * int(num_params**0.5)
    metrics = config.num_updates * len(METRIC_NAMES)
    words = rollout + batch + activations + 5 * num_params + metrics + config.num_envs * 4 * obs_size
    return 2 * 4 * words


def parameter_count(ctx: TrainContext) -> int:
    """Number of parameters of the run's policy family (abstract init: nothing is computed)."""
    obs = jax.ShapeDtypeStruct((1, *ctx.rollout.spec.obs_shape), np.float32)
    params = jax.eval_shape(ctx.policy.init, jax.random.key(0), obs)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def choose_max_parallel(num_runs: int, run_bytes: int, memory_bytes: int, fraction: float = 0.5) -> int:
    """Runs per batch: all `num_runs` if they fit in `fraction` of `memory_bytes`, else as many as
    do, balanced so that the batches are as even as possible (at least 1)."""
    fit = max(1, int(fraction * memory_bytes) // max(run_bytes, 1))
    if fit >= num_runs:
        return num_runs
    batches = math.ceil(num_runs / fit)
    return math.ceil(num_runs / batches)


# ---------------------------------------------------------------------------------------------
# Results


class SweepProgress(NamedTuple):
    """What the progress callback receives after every update of every batch."""

    runs_done: int  # runs finished
    num_runs: int
    updates_done: int  # updates finished, summed over runs
    total_updates: int  # num_runs × num_updates
    env_steps_done: int  # environment steps, summed over runs
    total_env_steps: int
    batch: int  # index of the running batch
    num_batches: int
    metrics: dict[str, np.ndarray]  # this update's metrics for the real runs of the batch, each [k]


class ConfigSummary(NamedTuple):
    """Per-configuration result over seeds. Statistics use the seeds whose final return is finite."""

    index: int  # position in `SweepResult.configurations`
    hyperparams: Configuration  # the swept values
    final_returns: np.ndarray  # [S] mean return over the last 10 % of updates per seed
    final_return_mean: float
    iqm: float  # interquartile mean of final_returns
    ci_low: float  # percentile-bootstrap CI of the IQM over seeds
    ci_high: float
    auc: float  # mean over seeds of the normalised area under the learning curve
    nonfinite: int  # seeds in which some update produced NaN/Inf (see `train.NONFINITE_FLAGS`)


class SweepResult(NamedTuple):
    """Everything a sweep produced. Arrays are NumPy; metrics are [num_updates, C, S]."""

    config: PPOConfig  # the base config (non-swept values)
    names: tuple[str, ...]  # swept fields
    configurations: tuple[Configuration, ...]  # C configurations (swept values only)
    seeds: tuple[int, ...]  # S seeds
    metrics: dict[str, np.ndarray]  # each [U, C, S]
    params: Any  # final parameters, leaves [C, S, ...]
    summaries: tuple[ConfigSummary, ...]  # C, in configuration order
    ranking: tuple[int, ...]  # configuration indices, best IQM first
    compiles: int  # XLA programs compiled from lowering to the last batch
    compile_seconds: float
    run_seconds: float
    wall_seconds: float  # compiling, running and statistics
    env_steps_per_second: float  # environment steps of all runs / run_seconds
    max_parallel: int  # runs per batch (K)
    num_batches: int
    program_bytes: int  # argument + output + temporary bytes of the compiled program (0 if unknown)
    confidence: float


def summarize(
    metrics: Mapping[str, np.ndarray],
    configurations: Sequence[Configuration],
    confidence: float = 0.95,
    reps: int = 10_000,
    seed: int = 0,
) -> tuple[ConfigSummary, ...]:
    """Per-configuration final-return statistics from metrics [U, C, S].

    final_returns = `runs.final_returns` per seed; iqm and its stratified percentile-bootstrap CI
    over seeds (`stats.bootstrap_ci`); auc = mean over seeds of `stats.area_under_curve` of the
    episode return against env steps.
    """
    returns = np.asarray(metrics["episode_return"], np.float64)
    steps = np.asarray(metrics["env_steps"], np.float64)
    out = []
    for c, point in enumerate(configurations):
        per_seed = final_returns(returns[:, c, :])
        finite = per_seed[np.isfinite(per_seed)]
        if finite.size:
            ci = stats.bootstrap_ci(finite, stats.iqm, confidence, reps, seed)
            mean, point_iqm, low, high = float(finite.mean()), ci.point, ci.low, ci.high
        else:
            mean = point_iqm = low = high = math.nan
        aucs = stats.area_under_curve(steps[:, c, 0], returns[:, c, :])
        auc = float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else math.nan
        bad = int((np.asarray(metrics["nonfinite"])[:, c, :] > 0).any(axis=0).sum()) if "nonfinite" in metrics else 0
        out.append(ConfigSummary(c, dict(point), per_seed, mean, point_iqm, low, high, auc, bad))
    return tuple(out)


def rank(summaries: Sequence[ConfigSummary]) -> tuple[int, ...]:
    """Configuration indices by IQM (then AUC) descending; NaN last."""

    def key(s: ConfigSummary):
        iqm = s.iqm if math.isfinite(s.iqm) else -math.inf
        auc = s.auc if math.isfinite(s.auc) else -math.inf
        return (-iqm, -auc, s.index)

    return tuple(s.index for s in sorted(summaries, key=key))


# ---------------------------------------------------------------------------------------------
# Running


class CompileCounter:
    """Counts XLA backend compilations while active (a `jax.monitoring` listener)."""

    def __init__(self):
        self.names: list[str] = []  # names of the compiled functions, in order

    @property
    def count(self) -> int:
        return len(self.names)

    def __call__(self, event: str, duration: float, *args, **kwargs) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            self.names.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self)


class _BatchTracker:
    """Host callback of the program: turns per-batch updates into sweep-wide `SweepProgress`."""

    def __init__(self, callback, num_runs: int, num_updates: int, steps_per_update: int, batch_size: int):
        self.callback = callback
        self.num_runs, self.num_updates, self.steps_per_update = num_runs, num_updates, steps_per_update
        self.batch_size = batch_size
        self.num_batches = math.ceil(num_runs / batch_size)
        self.batch = 0  # set by the host loop before each batch

    def __call__(self, update, metrics) -> None:
        before = self.batch * self.batch_size
        k = min(self.batch_size, self.num_runs - before)
        u = int(np.max(np.asarray(update)))
        updates_done = before * self.num_updates + k * u
        self.callback(
            SweepProgress(
                runs_done=before + (k if u >= self.num_updates else 0),
                num_runs=self.num_runs,
                updates_done=updates_done,
                total_updates=self.num_runs * self.num_updates,
                env_steps_done=updates_done * self.steps_per_update,
                total_env_steps=self.num_runs * self.num_updates * self.steps_per_update,
                batch=self.batch,
                num_batches=self.num_batches,
                metrics={n: np.asarray(v)[:k] for n, v in metrics.items()},
            )
        )


def _init_run(ctx: TrainContext, args: tuple[jax.Array, Hyperparams]) -> TrainState:
    key, hparams = args
    return init_state(ctx, key, hparams)


def _program(ctx: TrainContext, key_data: jax.Array, hparams: Hyperparams):
    """The compiled unit: K runs from raw key data [K, ...] and `Hyperparams` [K] -> (params, metrics).

    The same computation as `train.train_batch`: every run is initialised by `init_state` and
    then trained by `run_updates` vmapped over the K runs. The initialisation is a `lax.map`
    over runs rather than a vmap (bit-identical parameters): a batched QR in the orthogonal
    initialiser can deadlock XLA's CPU thread pool on machines with few cores.
    """
    keys = jax.random.wrap_key_data(key_data)
    state = lax.map(functools.partial(_init_run, ctx), (keys, hparams))
    state, metrics = run_updates(ctx, state, hparams, ctx.config.num_updates, batched=True)
    return state.params, metrics


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` by repeating the last row (padded runs are computed and discarded)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)])


def _run_batches(
    compiled, key_data: np.ndarray, hparams: Hyperparams, size: int, tracker, mesh: Any = None
) -> tuple[Any, dict]:
    """Run all R runs through `compiled` K = `size` at a time; concatenate the real runs.

    With a `mesh`, each batch's inputs are sharded over its devices along the run axis and the
    results gathered back (from every process) before the padding is dropped.
    """
    num_runs = key_data.shape[0]
    params_parts, metric_parts = [], []
    for b, start in enumerate(range(0, num_runs, size)):
        stop = min(start + size, num_runs)
        if tracker is not None:
            tracker.batch = b
        kd = _pad(key_data[start:stop], size)
        hp = jax.tree.map(lambda x: _pad(x[start:stop], size), hparams)  # noqa: B023
        if mesh is not None:
            kd, hp = put_runs((kd, hp), mesh)
        params, metrics = gather(jax.block_until_ready(compiled(kd, hp)))
        k = stop - start
        params_parts.append(jax.tree.map(lambda x: np.asarray(x)[:k], params))  # noqa: B023
        metric_parts.append({n: np.asarray(v)[:, :k] for n, v in metrics.items()})
    params = jax.tree.map(lambda *xs: np.concatenate(xs), *params_parts)
    metrics = {n: np.concatenate([m[n] for m in metric_parts], axis=1) for n in metric_parts[0]}
    return params, metrics


def _program_bytes(compiled) -> int:
    try:
        mem = compiled.memory_analysis()
        return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return 0


class SweepPlan(NamedTuple):
    """A validated sweep, ready to compile: everything `run_sweep` needs, decided up front."""

    config: PPOConfig
    ctx: TrainContext  # resolved environment and network (no callback yet)
    names: tuple[str, ...]  # swept fields
    configurations: tuple[Configuration, ...]  # C
    seeds: tuple[int, ...]  # S
    max_parallel: int  # runs per batch K
    auto_parallel: bool  # K was chosen from the device's memory
    hparams: Hyperparams  # host float32 leaves [C·S], run r = c·S + s
    key_data: np.ndarray  # raw data of jax.random.key(seed) per run [C·S, ...]
    mesh: Any = None  # devices the run axis is sharded over (K is a multiple of their count)

    @property
    def num_runs(self) -> int:
        return len(self.configurations) * len(self.seeds)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_runs / self.max_parallel)


def plan_sweep(
    config: PPOConfig,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: int | Sequence[int],
    max_parallel: int | None = None,
    env: Any = None,
    env_params: Any = None,
    mesh: Any = None,
) -> SweepPlan:
    """Validate a sweep and resolve its environment; raises `ConfigError` (nothing is compiled).

    grid: {name: values} (Cartesian product, see `grid_configurations`) or a list of
    configurations {name: value} (e.g. from `sample_configurations`); fields not given keep the
    value in `config`. seeds: a count n (config.seed, ..., config.seed + n − 1) or the seeds.
    max_parallel: runs per batch K (default: as many as fit in half the device's free memory),
    rounded up to a multiple of the device count (the padded runs are computed and dropped).
    mesh: a 1-D `jax.sharding.Mesh` to shard the run axis over (default: all devices).
    """
    configurations = grid_configurations(_check_grid(grid)) if isinstance(grid, Mapping) else list(grid)
    names = check_configurations(config, configurations)
    seeds = resolve_seeds(config, seeds)
    num_runs = len(configurations) * len(seeds)
    ctx = make_context(config, env, env_params)  # resolves the env: errors before compiling
    spec = ctx.rollout.spec
    inactive = inactive_fields(config, spec.discrete)
    for name in names:
        if name in inactive:
            raise ConfigError(name, f"sweeping it would change nothing: {inactive[name]}")
    mesh = run_mesh() if mesh is None else mesh
    size = _round_up(_batch_size(ctx, num_runs, max_parallel), mesh.size)
    run_seeds = np.tile(np.asarray(seeds, np.uint32), len(configurations))  # run r = c·S + s
    return SweepPlan(
        config=config,
        ctx=ctx,
        names=names,
        configurations=tuple(dict(c) for c in configurations),
        seeds=seeds,
        max_parallel=size,
        auto_parallel=max_parallel is None,
        hparams=run_hyperparams(config, configurations, len(seeds)),
        key_data=np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(run_seeds))),
        mesh=mesh,
    )


def _compile(plan: SweepPlan, ctx: TrainContext, size: int):
    example = (_pad(plan.key_data[:size], size), jax.tree.map(lambda x: _pad(x[:size], size), plan.hparams))
    if plan.mesh is not None:
        sharding = NamedSharding(plan.mesh, P(RUN_AXIS))
        example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), example)
    return jax.jit(functools.partial(_program, ctx)).lower(*example).compile(compiler_options=compiler_options())


def run_sweep(
    plan: SweepPlan,
    callback: Callable[[SweepProgress], None] | None = None,
    confidence: float = 0.95,
    bootstrap_reps: int = 10_000,
) -> SweepResult:
    """Compile the plan's program once and run all runs through it, K at a time.

    If K was chosen automatically and the compiled program turns out larger than half the free
    memory, K is reduced once and the program recompiled (counted in `compiles`).
    callback(SweepProgress) is called on the host after every update of every batch.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError("confidence", f"must be in (0, 1), got {confidence}")
    if bootstrap_reps < 1:
        raise ConfigError("bootstrap_reps", f"must be a positive integer, got {bootstrap_reps}")
    t_start = time.perf_counter()
    config, size = plan.config, plan.max_parallel
    devices = 1 if plan.mesh is None else plan.mesh.size
    tracker = None
    if callback is not None:
        tracker = _BatchTracker(callback, plan.num_runs, config.num_updates, config.batch_size, size)
    ctx = plan.ctx._replace(callback=tracker)
    with CompileCounter() as counter:
        t0 = time.perf_counter()
        compiled = _compile(plan, ctx, size)
        budget = device_memory_bytes() // 2
        if plan.auto_parallel and size > devices and _program_bytes(compiled) > budget:
            size = _round_up(max(1, size * budget // _program_bytes(compiled)), devices)
            compiled = _compile(plan, ctx, size)
            if tracker is not None:
                tracker.batch_size, tracker.num_batches = size, math.ceil(plan.num_runs / size)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        params, flat = _run_batches(compiled, plan.key_data, plan.hparams, size, tracker, plan.mesh)
        run_s = time.perf_counter() - t0

    shape = (len(plan.configurations), len(plan.seeds))
    metrics = {n: v.reshape(v.shape[0], *shape) for n, v in flat.items()}
    params = jax.tree.map(lambda x: x.reshape(*shape, *x.shape[1:]), params)
    summaries = summarize(metrics, plan.configurations, confidence, bootstrap_reps, seed=config.seed)
    return SweepResult(
        config=config,
        names=plan.names,
        configurations=plan.configurations,
        seeds=plan.seeds,
        metrics=metrics,
        params=params,
        summaries=summaries,
        ranking=rank(summaries),
        compiles=counter.count,
        compile_seconds=compile_s,
        run_seconds=run_s,
        wall_seconds=time.perf_counter() - t_start,
        env_steps_per_second=plan.num_runs * config.env_steps / run_s if run_s > 0 else math.nan,
        max_parallel=size,
        num_batches=math.ceil(plan.num_runs / size),
        program_bytes=_program_bytes(compiled),
        confidence=confidence,
    )


def sweep(
    config: PPOConfig,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    seeds: int | Sequence[int],
    *,
    max_parallel: int | None = None,
    callback: Callable[[SweepProgress], None] | None = None,
    env: Any = None,
    env_params: Any = None,
    confidence: float = 0.95,
    bootstrap_reps: int = 10_000,
) -> SweepResult:
    """Train every configuration × seed of a sweep in one compiled program: `plan_sweep` then
    `run_sweep`. Raises `ConfigError` before compiling for anything that cannot be swept.

    >>> result = sweep(default_config("CartPole-v1"), {"lr": [1e-4, 3e-4, 1e-3]}, seeds=16)
    >>> [result.summaries[c].iqm for c in result.ranking]
    """
    plan = plan_sweep(config, grid, seeds, max_parallel, env, env_params)
    return run_sweep(plan, callback, confidence, bootstrap_reps)


def _check_grid(grid: Mapping[str, Sequence[float]]) -> Mapping[str, Sequence[float]]:
    if not grid:
        raise ConfigError("grid", "the grid is empty: give at least one NAME=V1,V2")
    for name, values in grid.items():
        check_sweepable(name)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
            raise ConfigError(name, f"grid values must be a list of numbers, got {values!r}")
        if len(values) == 0:
            raise ConfigError(name, "has an empty list of values")
    return grid


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _batch_size(ctx: TrainContext, num_runs: int, max_parallel: int | None) -> int:
    if max_parallel is None:
        spec = ctx.rollout.spec
        estimate = run_memory_estimate(ctx.config, int(np.prod(spec.obs_shape)), spec.action_dim, parameter_count(ctx))
        return choose_max_parallel(num_runs, estimate, device_memory_bytes())
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, (int, np.integer)) or max_parallel < 1:
        raise ConfigError("max_parallel", f"must be a positive integer, got {max_parallel!r}")
    return min(int(max_parallel), num_runs)
