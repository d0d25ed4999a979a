"""A sweep's search space: parsing `--grid NAME=V1,V2` and `--random NAME=DIST(LOW,HIGH)`, the
configurations of a grid or a random search, and the checks that every swept field is traced,
acts under the run's objective and takes allowed values (all before anything compiles).

Only traced fields can be swept: static fields (`STATIC_FIELDS`) set array shapes or Python
branches and are compiled into the program.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ppo_jax.config import (
    STATIC_FIELDS,
    TRACED_FIELDS,
    ConfigError,
    Hyperparams,
    PPOConfig,
    check_traced_value,
    field_range,
    not_declared,
    part_declarations,
    traced_fields,
)
from ppo_jax.core.objectives import objectives_reading, reads
from ppo_jax.plugins import resolve_objective

Configuration = dict[str, float]  # values of some traced fields; the rest come from the config
DISTRIBUTIONS = ("uniform", "loguniform")


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


def parse_grid(texts: Sequence[str], config: PPOConfig | None = None) -> dict[str, tuple[float, ...]]:
    """Parse `NAME=V1,V2,...` items (one per --grid flag) into {name: values}; names are checked
    (against the fields `config`'s parts declare too, when given)."""
    grid: dict[str, tuple[float, ...]] = {}
    for text in texts:
        name, rhs = _split_assignment(text, "grid", "lr=1e-4,3e-4")
        parts = rhs.split(",")
        check_sweepable(name, parts, config)
        if name in grid:
            raise ConfigError(name, "given twice in --grid; list all its values in one NAME=V1,V2 item")
        if any(not p.strip() for p in parts):
            raise ConfigError(name, f"empty value in {text!r}; expected comma-separated numbers, e.g. lr=1e-4,3e-4")
        grid[name] = tuple(_number(p, name, text) for p in parts)
    return grid


_DIST_RE = re.compile(r"^\s*([a-z]+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*$")


def parse_random(texts: Sequence[str], config: PPOConfig | None = None) -> dict[str, Distribution]:
    """Parse `NAME=uniform(a,b)` / `NAME=loguniform(a,b)` items (one per --random flag)."""
    dists: dict[str, Distribution] = {}
    for text in texts:
        name, rhs = _split_assignment(text, "random", "lr=loguniform(1e-5,1e-2)")
        check_sweepable(name, (), config)
        if name in dists:
            raise ConfigError(name, "given twice in --random")
        match = _DIST_RE.match(rhs)
        if not match or match.group(1) not in DISTRIBUTIONS:
            raise ConfigError(name, f"expected {' or '.join(d + '(LOW,HIGH)' for d in DISTRIBUTIONS)}, got {rhs!r}")
        kind = match.group(1)
        dists[name] = Distribution(kind, _number(match.group(2), name, text), _number(match.group(3), name, text))
    return dists


def check_sweepable(name: str, values: Sequence[str] = (), config: PPOConfig | None = None) -> None:
    """Raise `ConfigError` unless `name` is a traced field (built in, or declared by `config`'s
    parts), saying why static fields cannot be swept."""
    traced = TRACED_FIELDS if config is None else traced_fields(config)
    static = STATIC_FIELDS if config is None else STATIC_FIELDS + tuple(part_declarations(config))
    if name in traced:
        return
    if name in static:
        flag = "--" + name.replace("_", "-")
        shown = [v.strip() for v in values][:2] or ["A", "B"]
        runs = ", then ".join(f"'ppo-jax sweep {flag} {v} ...'" for v in shown)
        raise ConfigError(
            name,
            "cannot be swept: it is a static field (it sets array shapes or a Python branch), so it is "
            f"compiled into the program and cannot be vmapped over. Run a separate sweep per value instead: {runs}. "
            f"Sweepable (traced) fields: {', '.join(traced)}",
        )
    if config is not None and name not in part_declarations(config):
        reason = not_declared(config, name, part_declarations(config))
        if not reason.startswith("unknown"):  # a shipped part's field, not of this run's parts
            raise ConfigError(name, f"sweeping it would change nothing: it is {reason}")
    close = difflib.get_close_matches(name, traced, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(name, f"unknown field; {hint}sweepable fields: {', '.join(traced)}")


def check_distribution(name: str, dist: Distribution, config: PPOConfig | None = None) -> None:
    """Both ends of `dist` must be allowed values of `name`, with low < high (and low > 0 for loguniform)."""
    if not dist.low < dist.high:
        raise ConfigError(name, f"{dist}: LOW must be less than HIGH")
    if dist.kind == "loguniform" and dist.low <= 0:
        raise ConfigError(name, f"{dist}: loguniform needs LOW > 0")
    for end in (dist.low, dist.high):
        _check_value(name, end, f"{dist} reaches {end:g}, which is", config)


def _check_value(name: str, value: float, where: str, config: PPOConfig | None = None) -> None:
    try:
        check_traced_value(name, value, config)
    except ConfigError as err:
        low, high, inclusive = field_range(config, name)
        rng = f"{'[' if inclusive else '('}{low:g}, {high:g}]"
        raise ConfigError(name, f"{where} outside the allowed range {rng}") from err


def inactive_fields(config: PPOConfig, discrete: bool) -> dict[str, str]:
    """Traced fields that cannot change training under `config`'s static choices, with the reason
    (read off the objective's record, `core.objectives.Objective.reads`; the fields the family and
    the env declare always act)."""
    active = reads(resolve_objective(config.objective), config, TRACED_FIELDS)
    active |= set(part_declarations(config)) - set(TRACED_FIELDS)
    out = {}
    for name in traced_fields(config):
        if name == "init_log_std" and discrete:
            out[name] = f"it only acts on continuous action spaces and {config.env} has discrete actions"
        elif name not in active:
            users = [o for o in objectives_reading(name, TRACED_FIELDS) if o != config.objective]
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
    config: PPOConfig | None = None,
) -> list[Configuration]:
    """Configurations of a grid, a random search, or both (every grid point × every sample);
    names are checked against `config`'s parts' fields too, when given."""
    grid, random = dict(grid or {}), dict(random or {})
    both = sorted(set(grid) & set(random))
    if both:
        raise ConfigError(both[0], "is both in --grid and in --random; sweep it one way")
    for name, dist in random.items():
        check_sweepable(name, (), config)
        check_distribution(name, dist, config)
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
            check_sweepable(name, (), config)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ConfigError(name, f"sweep values must be numbers, got {value!r}")
            _check_value(name, float(value), f"value {float(value):g} in the sweep is", config)
            names[name] = None
    if not names:
        raise ConfigError("grid", "the sweep sets no hyperparameter; give at least one NAME=V1,V2")
    return tuple(names)


def run_hyperparams(config: PPOConfig, configurations: Sequence[Mapping[str, float]], num_seeds: int) -> Hyperparams:
    """Host-side `Hyperparams` with float32 leaves [C·S]: run r = c·S + s gets configuration c."""
    names = traced_fields(config)
    base = {n: float(getattr(config, n)) for n in names}
    columns = {
        n: np.repeat(np.asarray([float(point.get(n, base[n])) for point in configurations], np.float32), num_seeds)
        for n in names
    }
    extra = {n: v for n, v in columns.items() if n not in TRACED_FIELDS}
    return Hyperparams(**{n: columns[n] for n in TRACED_FIELDS}, extra=extra)


def check_grid(grid: Mapping[str, Sequence[float]], config: PPOConfig | None = None) -> Mapping[str, Sequence[float]]:
    if not grid:
        raise ConfigError("grid", "the grid is empty: give at least one NAME=V1,V2")
    for name, values in grid.items():
        check_sweepable(name, (), config)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
            raise ConfigError(name, f"grid values must be a list of numbers, got {values!r}")
        if len(values) == 0:
            raise ConfigError(name, "has an empty list of values")
    return grid
