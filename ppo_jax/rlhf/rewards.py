"""Verifiable rewards on text: `reward(completion, answer) -> float`, one registry entry each, or a
user's own function named `module:function`.

| name    | R(completion, answer)                                                               |
|---------|-------------------------------------------------------------------------------------|
| exact   | 1 if the completion equals the answer (surrounding whitespace ignored), else 0       |
| numeric | 1 if the final number of the completion equals that of the answer, else 0; the final |
|         | number is the one after the last `#### ` (GSM8K), else inside the last `\\boxed{}`,   |
|         | else the last number in the text (commas dropped, compared as floats to 1e-6)        |
| format  | 1 if the completion states a final answer as `#### n` or `\\boxed{...}`, else 0       |
| math    | 1 if math-verify finds the completion's answer mathematically equal to the answer's  |
|         | (LaTeX or plain: 1/2, 0.5 and `\\frac{1}{2}` agree; sets, intervals), else 0; needs   |
|         | the `math` extra (`pip install 'ppo_jax[math]'`)                                     |
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable

from ppo_jax.errors import ConfigError

RewardFn = Callable[[str, str], float]

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def _boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_number(text: str) -> float | None:
    """The final answer of a text as a number (see the module docstring), or None."""
    marked = text.rsplit("####", 1)[1] if "####" in text else _boxed(text)
    candidates = re.findall(_NUMBER, marked if marked is not None else text)
    if not candidates:
        return None
    try:
        return float(candidates[0 if marked is not None else -1].replace(",", ""))
    except ValueError:
        return None


def exact(completion: str, answer: str) -> float:
    return float(completion.strip() == answer.strip())


def numeric(completion: str, answer: str) -> float:
    got, want = final_number(completion), final_number(answer)
    return float(got is not None and want is not None and abs(got - want) <= 1e-6)


def format_reward(completion: str, answer: str) -> float:
    return float(re.search(r"####\s*(" + _NUMBER + ")", completion) is not None or _boxed(completion) is not None)


def math_equivalent(completion: str, answer: str) -> float:
    """math-verify's `verify(parse(answer), parse(completion))` as 1.0 or 0.0. Its timeouts are off:
    they use SIGALRM, which only the main thread may set, and the reward runs on XLA's callback
    thread (its warnings that they are off are silenced)."""
    import logging

    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold = math_verify.parse(answer, parsing_timeout=None)
    return float(math_verify.verify(gold, math_verify.parse(completion, parsing_timeout=None), timeout_seconds=None))


REWARDS: dict[str, RewardFn] = {"exact": exact, "numeric": numeric, "format": format_reward, "math": math_equivalent}
EXTRAS = {"math": ("math_verify", "math-verify", "math")}  # reward: (module it imports, package, extra)


def resolve(name: str) -> RewardFn:
    """The reward named `name`: a registry key or `module:function` (imported). Raises
    `ConfigError("reward", ...)` for anything else."""
    if name in EXTRAS:
        module, package, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError("reward", f"{name} needs {package}: pip install 'ppo_jax[{extra}]'")
    if name in REWARDS:
        return REWARDS[name]
    module, _, function = name.partition(":")
    if not module or not function:
        raise ConfigError("reward", f"must be one of {', '.join(REWARDS)} or module:function, got {name!r}")
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise ConfigError("reward", f"cannot import {name!r} ({error})") from None
    if not callable(fn):
        raise ConfigError("reward", f"{name!r} is not a function")
    return fn
