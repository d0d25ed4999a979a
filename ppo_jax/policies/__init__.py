"""Policy families: actor-critic networks behind one protocol (`base.PolicyFamily`).

| name | module | for |
|---|---|---|
| `mlp` | `policies.mlp` | vector observations (the classic PPO network) |
| `cnn` | `policies.cnn` | image observations [H, W, C] (MinAtar) |
| `gru` | `policies.gru` | partial observability (recurrent) |

`make_policy(config, spec)` builds the family named by `config.network`; a user's own family is
any object with the protocol's methods, passed as `make_train(config, network=...)`.
"""

from __future__ import annotations

from typing import Any

from ppo_jax.policies import cnn, gru, mlp
from ppo_jax.policies.base import PolicyFamily, is_recurrent, rollout_apply, state_values, unroll
from ppo_jax.policies.masked import MaskedLogits

# name -> (factory(config, spec), family class with `from_description`)
FAMILIES = {
    "mlp": (mlp.make, mlp.MLPPolicy),
    "cnn": (cnn.make, cnn.CNNPolicy),
    "gru": (gru.make, gru.GRUPolicy),
}

__all__ = ["FAMILIES", "MaskedLogits", "PolicyFamily", "is_recurrent", "make_policy", "policy_from_description"]
__all__ += ["rollout_apply", "state_values", "unroll"]


def make_policy(config: Any, spec: Any) -> PolicyFamily:
    """The family named by `config.network` for an `EnvSpec` (raises `ConfigError` when the
    observations do not suit it); its logits masked when the env gives legal-action masks."""
    family = FAMILIES[config.network][0](config, spec)
    mask_size = getattr(spec, "mask_size", 0)
    return MaskedLogits(family, mask_size) if mask_size else family


def policy_from_description(desc: dict[str, Any]) -> PolicyFamily:
    """Rebuild a family from its `describe()` record (policy export), with its legal-action mask."""
    family = FAMILIES[desc["family"]][1].from_description(desc)
    return MaskedLogits(family, int(desc["legal_action_mask"])) if desc.get("legal_action_mask") else family
