"""Dual-clip PPO (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep
Reinforcement Learning", eq. 5) as an objective record with a traced hyperparameter of its own.

    L_clip = min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)
    L      = max(L_clip, c A)  where A < 0,   L_clip  where A ≥ 0,   c > 1

For a negative advantage the clipped surrogate is unbounded below as ρ grows; the second clip
bounds it at c·A. c is `dual_clip_c`: a traced field, so `ppo-jax sweep --grid dual_clip_c=2,3,5`
trains every value in one compiled program.
"""

from __future__ import annotations

import jax.numpy as jnp

from ppo_jax.core.losses import LossInputs, importance_ratio, value_loss
from ppo_jax.core.objectives import Objective, diagnostics, gae_targets
from ppo_jax.fields import Field


def dual_clip_surrogate(log_prob, old_log_prob, advantages, clip_eps, c):
    """−mean_b of the dual-clip objective above; arrays [B], clip_eps ε and c scalars."""
    ratio = importance_ratio(log_prob, old_log_prob)
    clipped = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)
    dual = jnp.where(advantages < 0, jnp.maximum(clipped, c * advantages), clipped)
    return -jnp.mean(dual)


def dual_clip_loss(inputs: LossInputs, hparams, state, config):
    """Dual-clip policy loss + c_v · value loss − c_e · entropy; (loss, metrics)."""
    policy = dual_clip_surrogate(
        inputs.log_prob, inputs.old_log_prob, inputs.advantages, hparams.clip_eps, hparams.dual_clip_c
    )
    clip = hparams.clip_eps if config.clip_value_loss else None
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns, clip)
    ent = jnp.mean(inputs.entropy)
    metrics = {"policy_loss": policy, "value_loss": vl, "entropy": ent, "approx_kl": jnp.zeros_like(vl)}
    return policy + hparams.vf_coef * vl - hparams.ent_coef * ent, diagnostics(metrics, inputs, hparams)


OBJECTIVE = Objective(
    name="dual_clip",
    summary="dual-clip PPO (Ye et al. 2020)",
    loss=dual_clip_loss,
    targets=gae_targets,
    fields=(
        Field(
            "dual_clip_c",
            3.0,
            "dual_clip: bound c on the objective of a negative advantage, c * A (> 1)",
            traced=True,
            low=1.0,
            low_inclusive=False,
        ),
    ),
)
