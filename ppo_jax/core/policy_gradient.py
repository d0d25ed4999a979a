"""Policy-gradient objectives other than the clipped surrogate, as pure loss functions.

Each full loss takes the same `LossInputs` as `ppo_jax.core.losses.ppo_loss` and returns
(loss scalar, metrics dict) with the same metric names (`policy_loss`, `value_loss`, `entropy`,
`approx_kl`), so a training loop can swap objectives without other changes. All are to be
minimised; all arrays are [B] (a flattened minibatch) unless stated otherwise.

The chain of ideas, from the oldest:

- `reinforce_loss`: Williams 1992, the score-function gradient of the discounted return,
  optionally with a learned state-value baseline.
- `a2c_loss`: Mnih et al. 2016, advantage actor-critic: the same gradient with an advantage in
  place of the return, a critic regression and an entropy bonus. No ratio, no clipping.
- `kl_penalty_loss`: Schulman et al. 2017 (PPO paper, §4), the importance-sampled surrogate with a
  KL penalty instead of clipping, and `adapt_kl_coef`, its adaptive coefficient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.losses import LossInputs, approx_kl_k3, gae, surrogate_objective, value_loss


def policy_gradient_loss(log_prob, weights):
    """Score-function (REINFORCE) surrogate −mean_b(log π_θ(a_b|s_b) · w_b); [B], [B] -> scalar.

    Its gradient is −mean(w ∇ log π), the policy-gradient estimate for weights w (a return or an
    advantage). The weights are constants: no gradient flows into them (stop_gradient).
    """
    return -jnp.mean(log_prob * lax.stop_gradient(weights))


def discounted_returns(rewards, terminated, truncated, gamma):
    """Monte-Carlo discounted return within each episode, time-major [T, N] -> [T, N].

        G_t = r_t + γ (1 − e_t) G_{t+1},   G_T = 0,   e_t = terminated[t] ∨ truncated[t]

    The sum stops at every episode end and at the end of the rollout (no bootstrapping): this is
    GAE with λ = 1 and V ≡ 0, and is computed by `ppo_jax.core.losses.gae`.
    """
    zeros = jnp.zeros_like(rewards)
    returns, _ = gae(rewards, zeros, zeros, terminated, truncated, gamma, 1.0)
    return returns


def reinforce_loss(inputs: LossInputs, vf_coef, ent_coef, use_baseline: bool = False):
    """REINFORCE (Williams 1992) on the discounted return, optionally with a baseline.

        L = −mean(log π_θ(a|s) · (G − b(s))) + c_v · ½ mean((V_θ(s) − G)²) − c_e · mean(H)

    G = `inputs.returns` is the discounted return G_t (e.g. `discounted_returns`);
    `inputs.advantages` is not used. Without a baseline b = 0 and the value term is dropped; with
    one (`use_baseline`, static) b(s) = V_θ(s) held constant in the policy term and V is regressed
    onto G. Returns (loss, metrics).
    """
    baseline = inputs.values if use_baseline else jnp.zeros_like(inputs.returns)
    pg = policy_gradient_loss(inputs.log_prob, inputs.returns - baseline)
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns) if use_baseline else jnp.float32(0.0)
    ent = jnp.mean(inputs.entropy)
    loss = pg + vf_coef * vl - ent_coef * ent
    return loss, _metrics(inputs, pg, vl, ent)


def a2c_loss(inputs: LossInputs, vf_coef, ent_coef):
    """Advantage actor-critic (Mnih et al. 2016, A3C without the asynchrony): no ratio, no clip.

        L = −mean(log π_θ(a|s) · A) + c_v · ½ mean((V_θ(s) − R)²) − c_e · mean(H)

    A = `inputs.advantages` (n-step or GAE, held constant), R = `inputs.returns`. Meant for one
    gradient step per rollout: with several epochs the samples become off-policy and nothing
    corrects for it. Returns (loss, metrics).
    """
    pg = policy_gradient_loss(inputs.log_prob, inputs.advantages)
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns)
    ent = jnp.mean(inputs.entropy)
    loss = pg + vf_coef * vl - ent_coef * ent
    return loss, _metrics(inputs, pg, vl, ent)


def kl_penalty_loss(inputs: LossInputs, beta, vf_coef, ent_coef, kl=None):
    """PPO with an adaptive KL penalty instead of clipping (Schulman et al. 2017, §4, eq. 8).

        L = −mean(ρ · A) + β · KL[π_old ‖ π_θ] + c_v · ½ mean((V_θ(s) − R)²) − c_e · mean(H)
        ρ = π_θ(a|s) / π_old(a|s)

    `kl` [B] is the per-state KL[π_old(·|s) ‖ π_θ(·|s)] when the caller has both distributions
    (e.g. `categorical_kl(old_logits, logits)`); when None, the k3 sample estimate
    mean((ρ − 1) − log ρ) over the stored actions (a ~ π_old) is used, whose gradient has the same
    expectation. β is a traced scalar; adapt it between updates with `adapt_kl_coef`.
    Returns (loss, metrics); metrics add `kl` (the penalised value) and `kl_penalty` (β·KL).
    """
    policy = surrogate_objective(inputs.log_prob, inputs.old_log_prob, inputs.advantages)
    kl_value = approx_kl_k3(inputs.log_prob, inputs.old_log_prob) if kl is None else jnp.mean(kl)
    pg = policy + beta * kl_value
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns)
    ent = jnp.mean(inputs.entropy)
    loss = pg + vf_coef * vl - ent_coef * ent
    metrics = _metrics(inputs, pg, vl, ent)
    metrics.update(kl=lax.stop_gradient(kl_value), kl_penalty=lax.stop_gradient(beta * kl_value))
    return loss, metrics


def adapt_kl_coef(beta, kl, kl_target):
    """Adaptive KL coefficient of the PPO paper (§4), applied once per policy update.

        β ← β / 2  if d < d_targ / 1.5
        β ← β · 2  if d > d_targ · 1.5
        β unchanged otherwise

    with d the KL[π_old ‖ π_θ] measured over the last update. Scalars in, scalar out; traceable.
    """
    beta = jnp.asarray(beta)
    halved = jnp.where(kl < kl_target / 1.5, 0.5 * beta, beta)
    return jnp.where(kl > 1.5 * kl_target, 2.0 * beta, halved)


def _metrics(inputs: LossInputs, pg, vl, ent) -> dict[str, jax.Array]:
    """The metric names shared with `ppo_loss` (approx_kl is k3 against the stored policy)."""
    log_prob = lax.stop_gradient(inputs.log_prob)
    return {
        "policy_loss": pg,
        "value_loss": vl,
        "entropy": ent,
        "approx_kl": approx_kl_k3(log_prob, inputs.old_log_prob),
    }
