"""Declared hyperparameters of a part (policy family, objective, environment).

A part lists its own fields once, as `Field` records; that one declaration gives the run's
config its keyword and record in `config.json`, the CLI its flag (once the part is named), the
check of every value, and, for a traced field, a leaf of the `Hyperparams` pytree that a sweep
may `jax.vmap` over. A part reads its values as `config.NAME` (static fields) or `hparams.NAME`
(traced fields), like the built-in ones.

    Field("dual_clip_c", 3.0, "dual-clip bound c on the negative-advantage ratio (> 1)", traced=True, low=1.0,
          low_inclusive=False)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ppo_jax.errors import ConfigError

# Traced values are float32 on the device: a larger magnitude would become inf there.
FLOAT32_MAX = 3.4028234663852886e38


class Field(NamedTuple):
    """One hyperparameter of a part: its name, default, one line of help, whether it is traced
    (a float32 leaf of `Hyperparams`, sweepable in one compile) or static (compiled in: shapes,
    branches), and for numbers the allowed range [low, high] (`low_inclusive` False: (low, high])."""

    name: str
    default: Any
    help: str
    traced: bool = False
    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = True

    @property
    def kind(self) -> type:
        """The value's type, from the default: bool, int, float, str or tuple (of ints)."""
        return float if self.traced else type(self.default)

    def range_text(self) -> str:
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}]"

    def check(self, value: Any) -> Any:
        """The value, checked (ints accepted for floats, lists for tuples); `ConfigError` naming
        the field otherwise."""
        kind = self.kind
        if kind is tuple and isinstance(value, list):
            value = tuple(value)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.name, f"must be {kind.__name__}, got {value!r}")
        if kind is tuple and (not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ConfigError(self.name, f"must be a non-empty tuple of integers, got {value!r}")
        numbers = value if kind is tuple else (value,) if kind in (int, float) else ()
        for number in numbers:
            if not self._in_range(number):
                raise ConfigError(self.name, f"must be in {self.range_text()}, got {value}")
        return value

    def _in_range(self, value: float) -> bool:
        low, high = max(self.low, -FLOAT32_MAX), min(self.high, FLOAT32_MAX)
        return math.isfinite(value) and (value >= low if self.low_inclusive else value > low) and value <= high


def declared(parts: Any) -> dict[str, Field]:
    """{name: Field} over the `fields` of `parts` (each part may have none); `ConfigError` when
    two parts declare the same name."""
    out: dict[str, Field] = {}
    for part in parts:
        for f in getattr(part, "fields", ()) or ():
            if f.name in out and out[f.name] != f:
                raise ConfigError(f.name, "declared by two parts of this run with different meanings")
            out[f.name] = f
    return out
