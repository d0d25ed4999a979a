"""Objectives as records in one registry: what the training program reads to train with each.

An `Objective` declares
- `loss(inputs, hparams, kl_coef, config) -> (loss, metrics)`: the minibatch loss minimised by
  SGD, with the metrics `policy_loss`, `value_loss`, `entropy`, `approx_kl`, `clip_frac`;
- `targets(rewards, values, next_values, terminated, truncated, hparams) -> (advantages, returns)`
  over a time-major rollout [T, N] (GAE, or Monte-Carlo returns);
- `reads(config)`: the traced `Hyperparams` fields that change its training (what a sweep may vary);
- `on_policy`: its gradient is only right on-policy, so it takes one SGD step per rollout;
- `after_update(kl_coef, kl, hparams) -> kl_coef`: run once per update with the KL the update ended
  at (the adaptive β of `kl_penalty`), or None;
- `policy_step(surrogate_fn, kl_fn, theta, hparams, mean) -> (theta, metrics)`: a whole-batch
  policy step replacing the SGD policy term (TRPO's natural gradient; the SGD then fits only the
  critic), or None.

Adding an objective is one entry in `OBJECTIVES` plus its loss function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.losses import LossInputs, clip_fraction, gae, ppo_loss, value_loss
from ppo_jax.core.policy_gradient import a2c_loss, adapt_kl_coef, discounted_returns, kl_penalty_loss, reinforce_loss
from ppo_jax.core.trpo import trpo_step

METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac")
# Fields every objective's training reads: the optimizer, the discount and the Gaussian head.
COMMON_FIELDS = frozenset({"lr", "max_grad_norm", "adam_eps", "gamma", "init_log_std"})


class Objective(NamedTuple):
    """One objective (see the module docstring)."""

    name: str
    summary: str
    loss: Callable[..., tuple[jax.Array, dict]]
    targets: Callable[..., tuple[jax.Array, jax.Array]]
    reads: Callable[[Any], frozenset]
    on_policy: bool = False
    after_update: Callable[..., jax.Array] | None = None
    policy_step: Callable[..., tuple[jax.Array, dict]] | None = None


def gae_targets(rewards, values, next_values, terminated, truncated, hparams):
    """GAE(γ, λ) advantages and returns A + V (`losses.gae`); arrays [T, N]."""
    return gae(rewards, values, next_values, terminated, truncated, hparams.gamma, hparams.gae_lambda)


def monte_carlo_targets(rewards, values, next_values, terminated, truncated, hparams):
    """GAE advantages (unused by REINFORCE) and the Monte-Carlo return G_t within the rollout
    (`policy_gradient.discounted_returns`, no bootstrap) as the return; arrays [T, N]."""
    advantages, _ = gae_targets(rewards, values, next_values, terminated, truncated, hparams)
    return advantages, discounted_returns(rewards, terminated, truncated, hparams.gamma)


def _diagnostics(metrics: dict, inputs: LossInputs, hparams) -> dict:
    """The shared metric names; clip_frac (|ρ − 1| > clip_eps) as a measure of how far ρ moved."""
    out = {k: metrics[k] for k in METRICS if k in metrics}
    out["clip_frac"] = clip_fraction(lax.stop_gradient(inputs.log_prob), inputs.old_log_prob, hparams.clip_eps)
    return out


def _clip(inputs: LossInputs, hparams, kl_coef, config):
    loss, metrics = ppo_loss(inputs, hparams.clip_eps, hparams.vf_coef, hparams.ent_coef, config.clip_value_loss)
    return loss, {k: metrics[k] for k in METRICS}


def _kl_penalty(inputs: LossInputs, hparams, kl_coef, config):
    loss, metrics = kl_penalty_loss(inputs, kl_coef, hparams.vf_coef, hparams.ent_coef)
    return loss, _diagnostics(metrics, inputs, hparams)


def _a2c(inputs: LossInputs, hparams, kl_coef, config):
    loss, metrics = a2c_loss(inputs, hparams.vf_coef, hparams.ent_coef)
    return loss, _diagnostics(metrics, inputs, hparams)


def _reinforce(inputs: LossInputs, hparams, kl_coef, config):
    loss, metrics = reinforce_loss(inputs, hparams.vf_coef, hparams.ent_coef, config.reinforce_baseline)
    return loss, _diagnostics(metrics, inputs, hparams)


def _critic_only(inputs: LossInputs, hparams, kl_coef, config):
    """TRPO's SGD part: the critic regression ½·mean((V − R)²) alone (the policy moves by
    `policy_step`); the policy metrics are filled in by that step."""
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns)
    zero = jnp.zeros_like(vl)
    return vl, {"policy_loss": zero, "value_loss": vl, "entropy": zero, "approx_kl": zero, "clip_frac": zero}


def _adapt_beta(kl_coef, kl, hparams):
    return adapt_kl_coef(kl_coef, kl, hparams.kl_target)


def _trpo_policy_step(surrogate_fn, kl_fn, theta, hparams, mean):
    """`trpo.trpo_step` within radius δ = `max_kl`; metrics policy_loss = −L, approx_kl = KL̄."""
    step = trpo_step(surrogate_fn, kl_fn, theta, hparams.max_kl, mean)
    return step.theta, {"policy_loss": -step.surrogate, "approx_kl": step.kl}


def _reads(*fields: str):
    chosen = COMMON_FIELDS | frozenset(fields)
    return lambda config: chosen


def _reinforce_reads(config) -> frozenset:
    return COMMON_FIELDS | {"ent_coef"} | ({"vf_coef"} if config.reinforce_baseline else set())


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "clip",
            "PPO's clipped surrogate (Schulman et al. 2017, eq. 7)",
            _clip,
            gae_targets,
            _reads("gae_lambda", "clip_eps", "vf_coef", "ent_coef"),
        ),
        Objective(
            "kl_penalty",
            "PPO with an adaptive KL penalty (Schulman et al. 2017, §4)",
            _kl_penalty,
            gae_targets,
            _reads("gae_lambda", "kl_coef", "kl_target", "vf_coef", "ent_coef"),
            after_update=_adapt_beta,
        ),
        Objective(
            "reinforce",
            "REINFORCE on Monte-Carlo returns (Williams 1992)",
            _reinforce,
            monte_carlo_targets,
            _reinforce_reads,
            on_policy=True,
        ),
        Objective(
            "a2c",
            "advantage actor-critic (Mnih et al. 2016)",
            _a2c,
            gae_targets,
            _reads("gae_lambda", "vf_coef", "ent_coef"),
            on_policy=True,
        ),
        Objective(
            "trpo",
            "TRPO's natural-gradient step in a KL trust region (Schulman et al. 2015)",
            _critic_only,
            gae_targets,
            _reads("gae_lambda", "max_kl"),
            policy_step=_trpo_policy_step,
        ),
    )
}


def objectives_reading(field: str) -> list[str]:
    """Names of the objectives whose training reads traced field `field` (under default settings)."""
    from types import SimpleNamespace

    config = SimpleNamespace(reinforce_baseline=True)
    return [name for name, o in OBJECTIVES.items() if field in o.reads(config)]
