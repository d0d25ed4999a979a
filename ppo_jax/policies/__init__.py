"""Policy families: actor-critic networks behind one protocol (`base.PolicyFamily`), each named by
a `base.Family` record.

| name | module | for |
|---|---|---|
| `mlp` | `policies.mlp` | vector observations (the classic PPO network) |
| `cnn` | `policies.cnn` | image observations [H, W, C] (MinAtar) |
| `gru` | `policies.gru` | partial observability (recurrent) |

`engine.parts.make_policy(config, spec)` builds the family `config.network` names (a shipped name
or a reference `package.module:attribute` to a user's `Family`, see `ppo_jax.plugins`); a family
object can also be passed as `make_train(config, network=...)`.
"""

from __future__ import annotations

from typing import Any

from ppo_jax.policies import cnn, gru, mlp
from ppo_jax.policies.base import Family, PolicyFamily, is_recurrent, rollout_apply, state_values, unroll
from ppo_jax.policies.masked import MaskedLogits

FAMILIES: dict[str, Family] = {f.name: f for f in (mlp.FAMILY, cnn.FAMILY, gru.FAMILY)}

__all__ = ["FAMILIES", "Family", "MaskedLogits", "PolicyFamily", "is_recurrent", "rollout_apply", "state_values"]
__all__ += ["unroll", "with_mask"]


def with_mask(family: PolicyFamily, spec: Any) -> PolicyFamily:
    """The family with its logits masked when the env gives legal-action masks."""
    mask_size = getattr(spec, "mask_size", 0)
    return MaskedLogits(family, mask_size) if mask_size else family
