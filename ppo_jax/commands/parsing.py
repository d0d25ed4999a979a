"""The parser every `ppo-jax` command uses: a bad flag is one line naming the flag, what it
accepts and a close match (difflib), exit code 2; the usage text only with `--help`."""

from __future__ import annotations

import argparse
import difflib
import re


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (`one_line_error`) and exit code 2; the usage
    text is shown by `--help` only. Subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"ppo-jax: error: {one_line_error(message, self)}\n")


_CHOICE = re.compile(r"argument (?P<flag>[^:]+): invalid choice: (?P<value>.*?) \(choose from (?P<choices>.*)\)$")
_ARGUMENT = re.compile(r"argument (?P<flag>[^:]+): (?P<text>.*)$")
_BUILTIN_TYPE = re.compile(r"invalid (?P<kind>int|float) value: (?P<value>.*)$")
_WANTED = {"int": "an integer", "float": "a number"}


def _close(value: str, candidates) -> str:
    """' (did you mean X?)' for the closest of `candidates` (difflib), or ''."""
    match = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {match[0]}?)" if match else ""


def one_line_error(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's error `message` as one line naming the flag, what it accepts and a close match:
    "--algo must be one of grpo, ppo, ...; got 'dpo' (did you mean grpo?)"."""

    def flag_name(text: str) -> str:  # the first long form: `-h/--help` is --help, `--x/--no-x` is --x
        parts = text.split("/")
        return next((p for p in parts if p.startswith("--")), parts[-1])

    choice = _CHOICE.match(message)
    if choice:
        value = choice["value"].strip("'")
        choices = [c.strip().strip("'") for c in choice["choices"].split(",")]
        if choice["flag"] == "COMMAND":
            return f"unknown command {value!r}{_close(value, choices)}; the commands: {', '.join(choices)}"
        return f"{flag_name(choice['flag'])} must be one of {', '.join(choices)}; got {value!r}{_close(value, choices)}"
    if message.startswith("the following arguments are required: "):
        return f"{parser.prog} needs {message.split(': ', 1)[1]} (see {parser.prog} --help)"
    if message.startswith("unrecognized arguments: "):
        extra = message.split(": ", 1)[1].split()
        first = extra[0]
        if not first.startswith("-"):
            return f"{parser.prog} takes no argument {first!r} here; {parser.prog} --help lists what it takes"
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        hint = _close(first.split("=", 1)[0], options)
        return f"unknown flag {first}{hint}; {parser.prog} --help lists every flag"
    argument = _ARGUMENT.match(message)
    if argument:
        name, text = flag_name(argument["flag"]), argument["text"]
        builtin = _BUILTIN_TYPE.match(text)
        if builtin:
            return f"{name} expects {_WANTED[builtin['kind']]}, got {builtin['value']}"
        if text == "expected one argument":
            return f"{name} expects a value"
        return text if text.startswith(name) else f"{name}: {text}"
    return message
