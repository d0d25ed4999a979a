"""Legal-action masks on any family with Categorical logits.

Some suites (Jumanji) say which actions are legal in each state; their adapter appends the mask
(1 legal, 0 illegal; one entry per action) to the flat observation. `MaskedLogits` wraps a family
and replaces the logits of illegal actions by a large negative number, so they are never
sampled, have probability 0 in the log-probabilities, entropy and KL the losses use, and get no
gradient. The wrapped family still sees the whole observation, mask included.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ppo_jax.policies.base import rollout_apply, state_values, unroll

ILLEGAL_LOGIT = -1e9  # finite: exp underflows to exactly 0 and 0 · logit stays 0 in the entropy


def mask_logits(logits: jax.Array, obs: jax.Array, mask_size: int) -> jax.Array:
    """logits [..., A] where obs[..., −A:] > 0.5, ILLEGAL_LOGIT elsewhere (A = mask_size)."""
    legal = obs[..., obs.shape[-1] - mask_size :] > 0.5
    return jnp.where(legal, logits, jnp.asarray(ILLEGAL_LOGIT, logits.dtype))


@dataclasses.dataclass(frozen=True)
class MaskedLogits:
    """A policy family whose Categorical logits are masked by the observation's trailing
    `mask_size` entries (see the module docstring)."""

    inner: Any
    mask_size: int

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any:
        return self.inner.init(key, obs, init_log_std)

    def initial_carry(self, num: int) -> Any:
        return self.inner.initial_carry(num)

    def apply(self, params: Any, carry: Any, obs: jax.Array, reset: Any = None):
        carry, logits, value = self.inner.apply(params, carry, obs, reset)
        return carry, mask_logits(logits, obs, self.mask_size), value

    def unroll(self, params: Any, carry: Any, obs: jax.Array, reset: Any):
        logits, value = unroll(self.inner, params, carry, obs, reset)
        return mask_logits(logits, obs, self.mask_size), value

    def value(self, params: Any, carry: Any, obs: jax.Array) -> jax.Array:
        return state_values(self.inner, params, carry, obs, obs.shape[:-1])

    def rollout_apply(self, params: Any):
        step = rollout_apply(self.inner, params)

        def apply(carry: Any, obs: jax.Array, reset: Any):
            carry, logits, value = step(carry, obs, reset)
            return carry, mask_logits(logits, obs, self.mask_size), value

        return apply

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "legal_action_mask": self.mask_size}
