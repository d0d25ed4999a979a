"""Policy families: actor-critic networks behind one protocol (`base.PolicyFamily`), each named by
a `base.Family` record.

| name | module | for |
|---|---|---|
| `mlp` | `policies.mlp` | vector observations (the classic PPO network) |
| `cnn` | `policies.cnn` | image observations [H, W, C] (MinAtar) |
| `gru` | `policies.gru` | partial observability (recurrent) |

`make_policy(config, spec)` builds the family `config.network` names (a shipped name or a
reference `package.module:attribute` to a user's `Family`, see `ppo_jax.plugins`); a family
object can also be passed as `make_train(config, network=...)`.
"""

from __future__ import annotations

from typing import Any

from ppo_jax.policies import cnn, gru, mlp
from ppo_jax.policies.base import Family, PolicyFamily, is_recurrent, rollout_apply, state_values, unroll
from ppo_jax.policies.masked import MaskedLogits

FAMILIES: dict[str, Family] = {f.name: f for f in (mlp.FAMILY, cnn.FAMILY, gru.FAMILY)}

__all__ = ["FAMILIES", "Family", "MaskedLogits", "PolicyFamily", "is_recurrent", "make_policy"]
__all__ += ["policy_from_description", "rollout_apply", "state_values", "unroll", "with_mask"]


def with_mask(family: PolicyFamily, spec: Any) -> PolicyFamily:
    """The family with its logits masked when the env gives legal-action masks."""
    mask_size = getattr(spec, "mask_size", 0)
    return MaskedLogits(family, mask_size) if mask_size else family


def make_policy(config: Any, spec: Any) -> PolicyFamily:
    """The family named by `config.network` for an `EnvSpec` (raises `ConfigError` when the
    observations do not suit it); its logits masked when the env gives legal-action masks."""
    from ppo_jax.plugins import resolve_family

    return with_mask(resolve_family(config.network).make(config, spec), spec)


def policy_from_description(desc: dict[str, Any], spec: Any = None) -> PolicyFamily:
    """Rebuild a family from its `describe()` record (policy export), with its legal-action mask.
    A user's family (`family` a reference) without `from_description` is made again from the
    run's config the record holds (`{"family": ref, "config": {...}}`) and the env's `spec`."""
    from ppo_jax.plugins import resolve_family

    record = resolve_family(desc["family"])
    if record.from_description is not None and "config" not in desc:
        family = record.from_description(desc)
    else:
        from ppo_jax.config import config_from_record

        family = record.make(config_from_record(desc["config"]), spec)
    return MaskedLogits(family, int(desc["legal_action_mask"])) if desc.get("legal_action_mask") else family
