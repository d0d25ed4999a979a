"""Declared fields: one record per hyperparameter drives the config, the traced pytree, the checks
and the flags, for the RL config (`ppo_jax.config`), the language-model config
(`ppo_jax.rlhf.config`) and the parts (policy family, objective, environment).

A part lists its own fields once, as `Field` records; that one declaration gives the run's
config its keyword and record in `config.json`, the CLI its flag (once the part is named), the
check of every value, and, for a traced field, a leaf of the `Hyperparams` pytree that a sweep
may `jax.vmap` over. A part reads its values as `config.NAME` (static fields) or `hparams.NAME`
(traced fields), like the built-in ones.

    Field("dual_clip_c", 3.0, "dual-clip bound c on the negative-advantage ratio (> 1)", traced=True, low=1.0,
          low_inclusive=False)

A config dataclass declares each of its own fields in one line with `declare` (the name is the
attribute's); `fields_of(cls)` reads them back as `Field`s, `check_fields` checks a config against
them, and a `TracedValues` subclass is the pytree of the traced ones:

    lr: float = declare(2.5e-4, "Adam learning rate", traced=True, low=0.0, low_inclusive=False)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax

from ppo_jax.errors import ConfigError

# Traced values are float32 on the device: a larger magnitude would become inf there.
FLOAT32_MAX = 3.4028234663852886e38


class Field(NamedTuple):
    """One hyperparameter: its name, default, one line of help, whether it is traced (a float32
    leaf of the traced pytree, sweepable in one compile) or static (compiled in: shapes,
    branches), for numbers the allowed range [low, high] (`low_inclusive` False: (low, high]),
    for strings the allowed `choices` (and, with `prefix`, any `prefix` + a non-empty text)."""

    name: str
    default: Any
    help: str
    traced: bool = False
    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = True
    choices: tuple[str, ...] = ()
    prefix: str = ""

    @property
    def kind(self) -> type:
        """The value's type, from the default: bool, int, float, str or tuple (of ints)."""
        return float if self.traced else type(self.default)

    def range_text(self) -> str:
        """'[low, high]' or '(low, high]', whole numbers written out: '[0, 2147483647]', '(0, inf]'."""
        return f"{'[' if self.low_inclusive else '('}{_number(self.low)}, {_number(self.high)}]"

    def allowed_text(self) -> str:
        """The allowed strings: 'a, b, c' (and 'or PREFIXPATH')."""
        return ", ".join(self.choices) + (f" or {self.prefix}PATH" if self.prefix else "")

    def check(self, value: Any) -> Any:
        """The value, checked (ints accepted for floats, returned as floats); `ConfigError` naming
        the field and what it allows otherwise."""
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            want = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise ConfigError(self.name, f"must be {want}, got {value!r}")
        if kind is tuple and (not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ConfigError(self.name, f"must be a non-empty tuple of integers, got {value!r}")
        if (self.choices or self.prefix) and not self._allowed(value):
            raise ConfigError(self.name, f"must be one of {self.allowed_text()}, got {value!r}")
        numbers = value if kind is tuple else (value,) if kind in (int, float) else ()
        for number in numbers:
            if not self._in_range(number):
                raise ConfigError(self.name, f"must be in {self.range_text()}, got {value}")
        return value

    def _allowed(self, value: str) -> bool:
        return value in self.choices or bool(self.prefix and value.startswith(self.prefix) and value != self.prefix)

    def _in_range(self, value: float) -> bool:
        low, high = max(self.low, -FLOAT32_MAX), min(self.high, FLOAT32_MAX)
        return math.isfinite(value) and (value >= low if self.low_inclusive else value > low) and value <= high


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


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


def declare(
    default: Any,
    help: str,
    *,
    traced: bool = False,
    low: float = -math.inf,
    high: float = math.inf,
    low_inclusive: bool = True,
    choices: tuple[str, ...] = (),
    prefix: str = "",
) -> Any:
    """A config dataclass field declared once: the `Field` (named after the attribute by
    `fields_of`) rides in the dataclass field's metadata, with its `help` and `traced`."""
    field = Field("", default, help, traced, low, high, low_inclusive, tuple(choices), prefix)
    return dataclasses.field(default=default, metadata={"field": field, "help": help, "traced": traced})


def fields_of(cls: type) -> dict[str, Field]:
    """{name: Field} of a config dataclass, in declaration order (its fields made by `declare`)."""
    return {f.name: f.metadata["field"]._replace(name=f.name) for f in dataclasses.fields(cls) if "field" in f.metadata}


def check_fields(config: Any, fields: dict[str, Field]) -> None:
    """Check `config`'s value of every field in `fields` (in order): `ConfigError` naming the first
    bad one and what it allows. An int given for a float field is stored as a float, so a config
    records one type per field."""
    for name, field in fields.items():
        value = getattr(config, name)
        checked = field.check(value)
        if checked is not value:
            object.__setattr__(config, name, checked)


class TracedValues:
    """Traced scalars by name (`hp.NAME`): a pytree whose leaves are the values, in the order given,
    so `jit` takes them as arguments and `jax.vmap` maps over them. A subclass is registered as a
    pytree of its own; its values come from a config's traced `Field`s."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        object.__setattr__(self, "_values", dict(values))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(cls, cls._flatten_with_keys, cls._unflatten, cls._flatten)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no traced field {name!r}") from None

    def __setattr__(self, name: str, value: Any):
        raise dataclasses.FrozenInstanceError(f"{type(self).__name__} is immutable; use .replace({name}=...)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and list(self._values.items()) == list(other._values.items())

    __hash__ = None  # values are arrays

    def names(self) -> tuple[str, ...]:
        return tuple(self._values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any):
        """A copy with `changes` applied to existing names."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no traced field {sorted(unknown)[0]!r}")
        return type(self)(**{**self._values, **changes})

    def _flatten(self):
        return list(self._values.values()), tuple(self._values)

    def _flatten_with_keys(self):
        return [(jax.tree_util.GetAttrKey(k), v) for k, v in self._values.items()], tuple(self._values)

    @classmethod
    def _unflatten(cls, names: tuple[str, ...], leaves) -> TracedValues:
        out = object.__new__(cls)
        object.__setattr__(out, "_values", dict(zip(names, leaves, strict=True)))
        return out
