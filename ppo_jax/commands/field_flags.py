"""One command-line flag per declared field (`ppo_jax.fields.Field`), the same for every command.

- booleans: `--x` (true), `--no-x` (false), or `--x VALUE` with VALUE one of true/false, yes/no,
  on/off, 1/0 (both forms work in `train`, `sweep`, `compare` and `rlhf`);
- integers: `--x 1000000` or `--x 1e6` (a whole number);
- floats: `--x 3e-4`; tuples of integers: `--x 64,64`; strings: `--x NAME`.

A value of the wrong type, or a string outside a field's fixed choices, is a one-line error naming
the flag (and a close match). Ranges, and strings a prefix allows (`jsonl:PATH`), are the field's
own check (`Field.check`), run when the config is built: one line naming the field and the allowed
values, before any compile.
"""

from __future__ import annotations

import argparse
from typing import Any

from ppo_jax.fields import Field

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_WANT = {int: "an integer", float: "a number", tuple: "comma-separated integers, e.g. 64,64"}


def flag(name: str) -> str:
    """`--name-with-dashes` of a field name."""
    return "--" + name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """True for true/yes/on/1, False for false/no/off/0 (any case); else an argparse error."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse(text: str, kind: type) -> Any:
    if kind is tuple:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
        if not values:
            raise ValueError
        return values
    if kind is int and not text.strip().lstrip("+-").isdigit():
        number = float(text)  # 1e6, 2.5e5: accepted when the value is a whole number
        if not number.is_integer():
            raise ValueError
        return int(number)
    return kind(text)


def typed(name: str, kind: type):
    """The argparse `type=` of a field of `kind` (int, float or tuple)."""

    def parse(text: str):
        try:
            return _parse(text, kind)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{flag(name)} expects {_WANT[kind]}, got {text!r}") from None

    return parse


class BoolFlag(argparse.Action):
    """`--x` → True, `--no-x` → False, `--x VALUE` → `parse_bool(VALUE)` (argparse applies it)."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        names = [*option_strings, *("--no-" + o[2:] for o in option_strings if o.startswith("--"))]
        super().__init__(names, dest, nargs="?", default=default, type=parse_bool, help=help, metavar="BOOL")

    def __call__(self, parser, namespace, values, option_string=None):
        negated = option_string is not None and option_string.startswith("--no-")
        if negated and values is not None:
            raise argparse.ArgumentError(self, f"{option_string} takes no value")
        value = not negated if values is None else values
        setattr(namespace, self.dest, value)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add_field_flag(group, field: Field, default: Any = None, help_text: str | None = None) -> None:
    """Add `field`'s flag to `group` (a parser or an argument group); `default` is what the
    namespace holds when the flag is absent (None: "not given", so the config's default applies)."""
    name, kind = field.name, field.kind
    text = (help_text if help_text is not None else field.help).replace("%", "%%")
    if kind is bool:
        group.add_argument(flag(name), dest=name, action=BoolFlag, default=default, help=text)
    elif kind is str and field.choices and not field.prefix:  # argparse names the flag and a close match
        group.add_argument(flag(name), dest=name, default=default, help=text, choices=field.choices)
    elif kind is str:
        group.add_argument(flag(name), dest=name, default=default, help=text, metavar="NAME" if name == "env" else None)
    else:
        metavar = kind.__name__.upper()
        group.add_argument(flag(name), dest=name, type=typed(name, kind), default=default, help=text, metavar=metavar)
