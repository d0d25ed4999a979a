"""The parts of a run resolved for the training program: environment, policy family, objective.

Each part comes from the name or reference in the config (`ppo_jax.plugins`), or from an object
the caller passes (`make_train(config, env=..., network=..., objective=...)`). A passed object
with an importable reference is recorded in the config by it, so the run folder names it and
every command can rebuild it; one without is listed in `Parts.unrecorded`, and a command that
would have to rebuild it refuses with one line naming it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax import plugins
from ppo_jax.core.objectives import OBJECTIVES
from ppo_jax.envs import EnvSpec, env_spec
from ppo_jax.errors import ConfigError
from ppo_jax.policies import FAMILIES, Family, MaskedLogits, PolicyFamily, with_mask


class Parts(NamedTuple):
    """A run's resolved parts; `config` names them (references for objects that have one)."""

    config: Any
    env: Any
    env_params: Any
    spec: EnvSpec
    policy: Any
    objective: Any
    unrecorded: tuple[str, ...]  # "kind: what" for objects with no importable reference


def _same_tree(a: Any, b: Any) -> bool:
    """True when two pytrees have the same structure and equal leaves."""
    try:
        la, ta = jax.tree.flatten(a)
        lb, tb = jax.tree.flatten(b)
    except Exception:  # not pytrees of arrays
        return False
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def _no_fields(kind: str, obj: Any, what: str) -> None:
    names = [f.name for f in getattr(obj, "fields", ()) or ()]
    if names:
        raise ConfigError(
            kind,
            f"{what} declares fields ({', '.join(names)}) but has no importable reference; define it at module "
            f"level of an importable module and name it --{kind} package.module:attribute",
        )


def _objective(config: Any, objective: Any, unrecorded: list[str]):
    if objective is None:
        return config, plugins.resolve_objective(config.objective)
    ref = plugins.reference_of(objective, OBJECTIVES)
    if ref is not None:
        return config.replace(objective=ref), objective
    what = f"objective record {getattr(objective, 'name', type(objective).__name__)!r}"
    _no_fields("objective", objective, what)
    unrecorded.append(f"objective: {what}")
    return config, objective


def _env(config: Any, env: Any, env_params: Any, unrecorded: list[str]):
    if env is None:
        made, default_params = plugins.resolve_env(config.env, config)
        return config, made, default_params if env_params is None else env_params
    default = env.default_params
    ref = plugins.reference_of(env)
    if ref is not None and (env_params is None or _same_tree(env_params, default)):
        return config.replace(env=ref), env, default
    what = f"{type(env).__name__} env object" + ("" if ref is None else f" ({ref}) with its own env_params")
    unrecorded.append(f"env: {what}")
    return config, env, default if env_params is None else env_params


def _policy(config: Any, network: Any, spec: EnvSpec, unrecorded: list[str]):
    if network is None:
        return config, make_policy(config, spec)
    ref = plugins.reference_of(network, FAMILIES)
    record = network if isinstance(network, Family) else None
    if ref is not None:
        config = config.replace(network=ref)
    else:
        what = f"{type(network).__name__} policy family object"
        _no_fields("network", network, what)
        unrecorded.append(f"network: {what}")
    return config, with_mask(record.make(config, spec), spec) if record is not None else network


def resolve_parts(config: Any, env: Any = None, env_params: Any = None, network: Any = None, objective: Any = None):
    """`Parts` of a run from its config and the objects given in place of its names."""
    unrecorded: list[str] = []
    config, objective = _objective(config, objective, unrecorded)
    config, env, env_params = _env(config, env, env_params, unrecorded)
    spec = env_spec(env, env_params)
    config, policy = _policy(config, network, spec, unrecorded)
    return Parts(config, env, env_params, spec, policy, objective, tuple(unrecorded))


def make_policy(config: Any, spec: Any) -> PolicyFamily:
    """The family named by `config.network` for an `EnvSpec` (raises `ConfigError` when the
    observations do not suit it); its logits masked when the env gives legal-action masks."""
    return with_mask(plugins.resolve_family(config.network).make(config, spec), spec)


def policy_from_description(desc: dict[str, Any], spec: Any = None) -> PolicyFamily:
    """Rebuild a family from its `describe()` record (policy export), with its legal-action mask.
    A user's family (`family` a reference) without `from_description` is made again from the
    run's config the record holds (`{"family": ref, "config": {...}}`) and the env's `spec`."""
    from ppo_jax.config import config_from_record

    record = plugins.resolve_family(desc["family"])
    if record.from_description is not None and "config" not in desc:
        family = record.from_description(desc)
    else:
        family = record.make(config_from_record(desc["config"]), spec)
    return MaskedLogits(family, int(desc["legal_action_mask"])) if desc.get("legal_action_mask") else family
