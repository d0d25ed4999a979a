"""Objectives as optax-style records in one registry: what the training program reads to train
with each.

An `Objective` declares
- `init(hparams) -> state`: the objective's own state, a pytree carried through the run in
  `TrainState.objective_state` (None: no state, `()`);
- `loss(inputs, hparams, state, config) -> (loss, metrics)`: the minibatch loss minimised by SGD,
  with the metrics `policy_loss`, `value_loss`, `entropy`, `approx_kl`, `clip_frac`;
- `after_update(state, stats, hparams) -> state`: run once per update with `UpdateStats` (the KL
  the update ended at), e.g. the adaptive β of `kl_penalty`; or None;
- `targets(rewards, values, next_values, terminated, truncated, hparams) -> (advantages, returns)`
  over a time-major rollout [T, N] (GAE, or Monte-Carlo returns);
- `reads(config)`: the built-in traced fields that change its training (what a sweep may vary;
  None: all of them); its own traced `fields` always count;
- `on_policy`: its gradient is only right on-policy, so it takes one SGD step per rollout;
- `policy_step(view, params, hparams, mean) -> (params, metrics)`: a whole-batch policy step on a
  `BatchView` replacing the SGD policy term (TRPO, `core.trpo`; the SGD then fits only the
  critic), or None;
- `fields`: its own hyperparameters (`ppo_jax.fields.Field`), read as `config.NAME` (static) or
  `hparams.NAME` (traced);
- `state_metrics(state) -> dict`: scalars of the state logged per update (e.g. `kl_coef`), or None.

A new objective is one record in its own module, named `--objective package.module:attribute`;
the shipped ones are registered in `OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.losses import LossInputs, clip_fraction, gae, ppo_loss, value_loss
from ppo_jax.core.policy_gradient import a2c_loss, adapt_kl_coef, discounted_returns, kl_penalty_loss, reinforce_loss
from ppo_jax.core.trpo import trpo_policy_step
from ppo_jax.fields import Field

METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac")
# Fields every objective's training reads: the optimizer, the discount and the Gaussian head.
COMMON_FIELDS = frozenset({"lr", "max_grad_norm", "adam_eps", "gamma", "init_log_std"})


class UpdateStats(NamedTuple):
    """What `after_update` sees of the update just done (scalars)."""

    kl: jax.Array  # k3 estimate of KL[π_old ‖ π_θ] over the whole batch after the update's epochs


class BatchView(NamedTuple):
    """A whole rollout batch as a whole-batch policy step (`Objective.policy_step`) sees it."""

    dist: Callable[[Any], Any]  # params -> the action distribution's head outputs over the batch
    log_prob: Callable[[Any], jax.Array]  # head outputs -> log π(a_t|s_t) of the stored actions [T, N]
    kl: Callable[[Any, Any], jax.Array]  # (p, q) head outputs -> KL(p ‖ q) per state [T, N]
    old_log_prob: jax.Array  # log π_old(a_t|s_t) [T, N]
    advantages: jax.Array  # [T, N], normalised over the batch when configured


class Objective(NamedTuple):
    """One objective (see the module docstring)."""

    name: str
    summary: str
    loss: Callable[..., tuple[jax.Array, dict]]
    targets: Callable[..., tuple[jax.Array, jax.Array]]
    reads: Callable[[Any], frozenset] | None = None
    on_policy: bool = False
    init: Callable[[Any], Any] | None = None
    after_update: Callable[..., Any] | None = None
    policy_step: Callable[..., tuple[Any, dict]] | None = None
    fields: tuple[Field, ...] = ()
    state_metrics: Callable[[Any], dict] | None = None


def initial_state(objective: Objective, hparams) -> Any:
    """The objective's state at the start of a run (`()` for one without state)."""
    return () if objective.init is None else objective.init(hparams)


def gae_targets(rewards, values, next_values, terminated, truncated, hparams):
    """GAE(γ, λ) advantages and returns A + V (`losses.gae`); arrays [T, N]."""
    return gae(rewards, values, next_values, terminated, truncated, hparams.gamma, hparams.gae_lambda)


def monte_carlo_targets(rewards, values, next_values, terminated, truncated, hparams):
    """GAE advantages (unused by REINFORCE) and the Monte-Carlo return G_t within the rollout
    (`policy_gradient.discounted_returns`, no bootstrap) as the return; arrays [T, N]."""
    advantages, _ = gae_targets(rewards, values, next_values, terminated, truncated, hparams)
    return advantages, discounted_returns(rewards, terminated, truncated, hparams.gamma)


def diagnostics(metrics: dict, inputs: LossInputs, hparams) -> dict:
    """The shared metric names; clip_frac (|ρ − 1| > clip_eps) as a measure of how far ρ moved."""
    out = {k: metrics[k] for k in METRICS if k in metrics}
    out["clip_frac"] = clip_fraction(lax.stop_gradient(inputs.log_prob), inputs.old_log_prob, hparams.clip_eps)
    return out


def _clip(inputs: LossInputs, hparams, state, config):
    loss, metrics = ppo_loss(inputs, hparams.clip_eps, hparams.vf_coef, hparams.ent_coef, config.clip_value_loss)
    return loss, {k: metrics[k] for k in METRICS}


def _kl_penalty(inputs: LossInputs, hparams, beta, config):
    loss, metrics = kl_penalty_loss(inputs, beta, hparams.vf_coef, hparams.ent_coef)
    return loss, diagnostics(metrics, inputs, hparams)


def _a2c(inputs: LossInputs, hparams, state, config):
    loss, metrics = a2c_loss(inputs, hparams.vf_coef, hparams.ent_coef)
    return loss, diagnostics(metrics, inputs, hparams)


def _reinforce(inputs: LossInputs, hparams, state, config):
    loss, metrics = reinforce_loss(inputs, hparams.vf_coef, hparams.ent_coef, config.reinforce_baseline)
    return loss, diagnostics(metrics, inputs, hparams)


def _critic_only(inputs: LossInputs, hparams, state, config):
    """TRPO's SGD part: the critic regression ½·mean((V − R)²) alone (the policy moves by
    `policy_step`); the policy metrics are filled in by that step."""
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns)
    zero = jnp.zeros_like(vl)
    return vl, {"policy_loss": zero, "value_loss": vl, "entropy": zero, "approx_kl": zero, "clip_frac": zero}


def _beta_init(hparams) -> jax.Array:
    """β at the start: the `kl_coef` field."""
    return jnp.asarray(hparams.kl_coef, jnp.float32)


def _adapt_beta(beta, stats: UpdateStats, hparams):
    return adapt_kl_coef(beta, stats.kl, hparams.kl_target)


def _beta_metrics(beta) -> dict:
    return {"kl_coef": beta}


def _reads(*fields: str):
    chosen = COMMON_FIELDS | frozenset(fields)
    return lambda config: chosen


def _reinforce_reads(config) -> frozenset:
    return COMMON_FIELDS | {"ent_coef"} | ({"vf_coef"} if config.reinforce_baseline else set())


KL_PENALTY_FIELDS = (
    Field("kl_coef", 1.0, "kl_penalty: initial KL coefficient beta (adapted every update)", traced=True, low=0.0),
    Field("kl_target", 0.01, "kl_penalty: target KL per update (> 0)", traced=True, low=0.0, low_inclusive=False),
)
TRPO_FIELDS = (
    Field(
        "max_kl",
        0.01,
        "trpo: trust-region radius delta on the mean KL per update (> 0)",
        traced=True,
        low=0.0,
        low_inclusive=False,
    ),
)
REINFORCE_FIELDS = (Field("reinforce_baseline", False, "reinforce: subtract a learned V(s) baseline"),)

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
            _reads("gae_lambda", "vf_coef", "ent_coef"),
            init=_beta_init,
            after_update=_adapt_beta,
            fields=KL_PENALTY_FIELDS,
            state_metrics=_beta_metrics,
        ),
        Objective(
            "reinforce",
            "REINFORCE on Monte-Carlo returns (Williams 1992)",
            _reinforce,
            monte_carlo_targets,
            _reinforce_reads,
            on_policy=True,
            fields=REINFORCE_FIELDS,
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
            _reads("gae_lambda"),
            policy_step=trpo_policy_step,
            fields=TRPO_FIELDS,
        ),
    )
}


def reads(objective: Objective, config: Any, builtin: tuple[str, ...]) -> frozenset:
    """The traced fields that change `objective`'s training under `config`: its `reads` (all of
    `builtin` when it has none) and its own traced fields."""
    base = frozenset(builtin) if objective.reads is None else objective.reads(config)
    return base | {f.name for f in objective.fields if f.traced}


def objectives_reading(field: str, builtin: tuple[str, ...] = ()) -> list[str]:
    """Names of the shipped objectives whose training reads traced field `field` (under default
    settings)."""
    from types import SimpleNamespace

    config = SimpleNamespace(reinforce_baseline=True)
    return [name for name, o in OBJECTIVES.items() if field in reads(o, config, builtin)]
