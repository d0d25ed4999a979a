"""Naming the parts of a run: a shipped name, or an import reference `package.module:attribute`.

One resolver for the three kinds of part, so every command rebuilds a run from the names and
references its folder records:

| kind | config field | a reference names |
|---|---|---|
| policy family | `network` | a `policies.Family` record, a factory `make(config, spec)`, or a family object |
| objective | `objective` | a `core.objectives.Objective` record |
| environment | `env` | a gymnax-style env object, or a factory `make(**fields) -> env or (env, env_params)` |

A part may declare its own hyperparameters (`fields`: `ppo_jax.fields.Field` records). An
unimportable reference is a `ConfigError` naming it. `reference_of(obj)` finds the name or
reference of an object passed to the library call, so the run folder can record it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ppo_jax.errors import ConfigError

KINDS = ("network", "objective", "env")


def is_reference(name: Any) -> bool:
    """True for `package.module:attribute` (a name with a colon)."""
    return isinstance(name, str) and ":" in name


def load_reference(ref: str, field: str) -> Any:
    """The object `package.module:attribute` names; `ConfigError(field)` naming the reference when
    the module cannot be imported or lacks the attribute."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(field, f"{ref!r} is not an import reference; write package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module failing while it runs
        cause = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ConfigError(field, f"cannot import {ref} ({cause}); is its package on PYTHONPATH?") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(field, f"cannot import {ref}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def reference_of(obj: Any, shipped: dict[str, Any] | None = None) -> str | None:
    """The shipped name (key of `shipped` holding `obj`) or `package.module:attribute` under which
    `obj` can be imported again, else None (an object made inside a function or in `__main__`)."""
    for name, value in (shipped or {}).items():
        if value is obj:
            return name
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    candidates = [module] if isinstance(module, str) else []
    if qualname and "<locals>" not in qualname and candidates and _lookup(candidates[0], qualname) is obj:
        return f"{candidates[0]}:{qualname}"
    candidates += [name for name in list(sys.modules) if name not in candidates]
    for name in candidates:
        mod = sys.modules.get(name)
        if mod is None or name == "__main__" or name.startswith(("jax", "numpy", "flax", "optax", "_")):
            continue
        for attr, value in list(getattr(mod, "__dict__", {}).items()):
            if value is obj and not attr.startswith("_"):
                return f"{name}:{attr}"
    return None


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _refused(field: str, name: Any, shipped: dict[str, Any]) -> ConfigError:
    return ConfigError(field, f"must be one of {', '.join(shipped)} or package.module:attribute, got {name!r}")


def resolve_objective(name: str) -> Any:
    """The `Objective` record a shipped name or a reference names."""
    from ppo_jax.core.objectives import OBJECTIVES

    if isinstance(name, str) and name in OBJECTIVES:
        return OBJECTIVES[name]
    if not is_reference(name):
        raise _refused("objective", name, OBJECTIVES)
    obj = load_reference(name, "objective")
    missing = [m for m in ("loss", "targets", "reads") if not hasattr(obj, m)]
    if missing:
        raise ConfigError("objective", f"{name} is not an objective record (no {', '.join(missing)})")
    return obj


def resolve_family(name: str) -> Any:
    """The `policies.Family` record a shipped name or a reference names (a factory or a family
    object is wrapped into one)."""
    from ppo_jax.policies import FAMILIES

    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    if not is_reference(name):
        raise _refused("network", name, FAMILIES)
    return as_family(load_reference(name, "network"), name)


def as_family(obj: Any, name: str) -> Any:
    """A `Family` record from a record, a family object (`init`/`apply`) or a factory."""
    from ppo_jax.policies.base import Family

    if isinstance(obj, Family):
        return obj
    if hasattr(obj, "apply") and hasattr(obj, "init"):
        return Family(name, lambda config, spec: obj, getattr(type(obj), "from_description", None))
    if callable(obj):
        return Family(name, obj, None, tuple(getattr(obj, "fields", ())))
    raise ConfigError("network", f"{name} is neither a Family record, a family object nor a factory(config, spec)")


def env_part(name: str) -> Any:
    """What a reference names for `env` (None for a shipped id, which declares no fields)."""
    return load_reference(name, "env") if is_reference(name) else None


def resolve_env(name: str, config: Any = None) -> tuple[Any, Any]:
    """(env, env_params) for a gymnax id, `SUITE/NAME`, or a reference; a factory's declared
    fields are passed to it from `config` as keywords."""
    if not is_reference(name):
        from ppo_jax.envs import make_env

        return make_env(name)
    obj = load_reference(name, "env")
    if hasattr(obj, "step") and hasattr(obj, "reset"):
        return obj, obj.default_params
    if not callable(obj):
        raise ConfigError("env", f"{name} is neither an env (reset, step) nor a factory of one")
    kwargs = {f.name: getattr(config, f.name) for f in getattr(obj, "fields", ())} if config is not None else {}
    made = obj(**kwargs)
    env, params = made if isinstance(made, tuple) else (made, None)
    return env, env.default_params if params is None else params


def parts(network: Any, objective: Any, env: Any) -> tuple[Any, Any, Any]:
    """The three parts named by a config's fields (the env part only for a reference)."""
    return resolve_family(network), resolve_objective(objective), env_part(env)


def check_rebuildable(record: dict[str, Any], where: Any, given: dict[str, Any] | None = None) -> None:
    """Refuse, in one line, a run whose parts were objects without an importable reference (its
    record's `unrecorded`) unless the caller gives those parts again (`given`: kind -> object)."""
    missing = [item for item in record.get("unrecorded") or () if (given or {}).get(item.split(":")[0]) is None]
    if missing:
        kinds = sorted({item.split(":")[0] for item in missing})
        raise ConfigError(
            missing[0].split(":")[0],
            f"{where} was trained with parts that have no importable reference ({'; '.join(missing)}), so it cannot "
            f"be rebuilt from its folder; pass {', '.join(k + '=' for k in kinds)} to the library call "
            "(ppo_jax.load, ppo_jax.run(resume=...)), or define them at module level and name them by reference",
        )
