"""PPO mathematics as pure functions of arrays and scalars (no env, network or optimizer).

Time-index convention for rollout arrays: index t holds s_t, a_t, r_t (the reward for a_t),
and the flags describing how the transition s_t -> s'_t ended. Arrays are time-major [T, N].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """Generalised advantage estimation with truncation-aware bootstrapping.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE".

        δ_t = r_t + γ (1 − d_t) V(s'_t) − V(s_t)
        A_t = δ_t + γ λ (1 − e_t) A_{t+1},   A_T = 0
        returns_t = A_t + V(s_t)

    with d_t = `terminated[t]`, e_t = terminated[t] ∨ truncated[t], and V(s'_t) =
    `next_values[t]`, the value of the true next state (the final observation when the episode
    ended at t). A time-limit cut (truncated, not terminated) bootstraps from V(s'_t) but stops
    the recursion; both flags set counts as terminated.

    Args: all arrays [T, N] (any trailing shape works); gamma, gae_lambda scalars.
    Returns: (advantages [T, N], returns [T, N]).
    """
    terminated = terminated.astype(values.dtype)
    ended = jnp.logical_or(terminated > 0, truncated).astype(values.dtype)
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    decay = gamma * gae_lambda * (1.0 - ended)

    def backward(next_adv, xs):
        delta_t, decay_t = xs
        adv = delta_t + decay_t * next_adv
        return adv, adv

    _, advantages = lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True)
    return advantages, advantages + values


def importance_ratio(log_prob, old_log_prob):
    """ρ = π_θ(a|s) / π_θ_old(a|s) = exp(log π_θ − log π_θ_old); shapes [B] -> [B]."""
    return jnp.exp(log_prob - old_log_prob)


def surrogate_objective(log_prob, old_log_prob, advantages):
    """Unclipped surrogate loss (Schulman et al. 2015, TRPO): −mean(ρ·A); [B] -> scalar."""
    return -jnp.mean(importance_ratio(log_prob, old_log_prob) * advantages)


def clipped_surrogate(log_prob, old_log_prob, advantages, clip_eps):
    """PPO clipped surrogate loss (Schulman et al. 2017, eq. 7), to be minimised.

        L = −mean_b min(ρ_b A_b, clip(ρ_b, 1 − ε, 1 + ε) A_b),  ρ_b = exp(log π_θ − log π_old)

    Args: log_prob, old_log_prob, advantages [B]; clip_eps scalar ε > 0. Returns a scalar.
    The gradient w.r.t. log_prob is zero where A > 0 and ρ > 1 + ε, or A < 0 and ρ < 1 − ε.
    """
    ratio = importance_ratio(log_prob, old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))


def value_loss(values, old_values, returns, clip_eps=None):
    """Critic regression loss ½·mean((V − R)²), optionally clipped around the old values.

    Clipped form (PPO2 baselines; Huang et al. 2022, detail 9):
        V_clip = V_old + clip(V − V_old, −ε, ε);  L = ½·mean(max((V − R)², (V_clip − R)²))
    Args: values, old_values, returns [B]; clip_eps scalar or None (unclipped). Returns scalar.
    """
    unclipped = jnp.square(values - returns)
    if clip_eps is None:
        return 0.5 * jnp.mean(unclipped)
    v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.mean(jnp.maximum(unclipped, jnp.square(v_clipped - returns)))


def kl_k3_terms(sample_log_prob, other_log_prob):
    """Per-sample k3 estimate of KL[p ‖ q] from samples x ~ p (Schulman 2020, "Approximating KL
    Divergence"), the one k3 of the library:

        log r = log q(x) − log p(x),   k3 = (r − 1) − log r

    `sample_log_prob` = log p(x) (the policy the samples came from), `other_log_prob` = log q(x).
    Unbiased (E_p[r] = 1, E_p[−log r] = KL[p ‖ q]), non-negative, 0 where p(x) = q(x). Same
    shapes in and out. Padding must be masked before the call (both log-probs 0 there): masking
    after it turns an overflowing exp into inf · 0 = NaN."""
    log_r = other_log_prob - sample_log_prob
    return jnp.expm1(log_r) - log_r


def approx_kl_k3(log_prob, old_log_prob):
    """KL(π_old‖π_θ) estimator k3 = mean((ρ − 1) − log ρ), ρ = π_θ/π_old (`kl_k3_terms` with the
    samples a ~ π_old). Non-negative for every sample; 0 when ρ = 1. [B] -> scalar."""
    return jnp.mean(kl_k3_terms(old_log_prob, log_prob))


def clip_fraction(log_prob, old_log_prob, clip_eps):
    """Fraction of samples with |ρ − 1| > ε; [B] -> scalar."""
    ratio = importance_ratio(log_prob, old_log_prob)
    return jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))


def normalize_advantages(advantages, eps=1e-8, reduce=None):
    """(A − mean A) / (std A + eps) over the minibatch [B] (any shape) -> same shape; a minibatch
    of one is only centred, and one without spread becomes 0 (see `scale_centred`).

    `reduce` (optional) supplies cross-device `mean`, `max` and `size()` for a minibatch split
    over devices (`engine.sgd.Collective`): the moments are then those of the whole minibatch.
    """
    if reduce is None or reduce.axis is None:
        centred = advantages - jnp.mean(advantages)
        if advantages.size < 2:
            return centred
        return scale_centred(centred, jnp.std(advantages), jnp.max(jnp.abs(advantages)), eps)
    centred = advantages - reduce.mean(jnp.mean(advantages))
    if advantages.size * reduce.size() < 2:
        return centred
    std = jnp.sqrt(reduce.mean(jnp.mean(jnp.square(centred))))
    return scale_centred(centred, std, reduce.max(jnp.max(jnp.abs(advantages))), eps)


def scale_centred(centred, std, magnitude, eps=1e-8):
    """centred / (std + eps), or 0 where the spread is only rounding: std ≤ 8·ε_float·magnitude
    (magnitude = max |A|). A constant minibatch A = c has a float mean off by about one ulp of c,
    so A − mean is ±ulp and std ~ ulp; dividing would turn that noise into same-signed
    advantages near ±1. NaN stays NaN (0·NaN), for the non-finite check."""
    noise = 8 * jnp.finfo(centred.dtype).eps * magnitude
    return jnp.where(std > noise, centred / (std + eps), centred * 0)


def explained_variance(values, returns, reduce=None):
    """1 − Var[R − V] / Var[R]; 1 is a perfect critic, ≤ 0 no better than a constant. NaN-free.
    With `reduce` (see `normalize_advantages`) the variances are those of all devices' samples."""
    if reduce is None or reduce.axis is None:
        var = jnp.var
    else:
        var = lambda x: reduce.mean(jnp.mean(jnp.square(x - reduce.mean(jnp.mean(x)))))  # noqa: E731
    var_r = var(returns)
    return jnp.where(var_r > 0, 1.0 - var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), 0.0)


class LossInputs(NamedTuple):
    """What `ppo_loss` needs for one minibatch; all arrays [B]."""

    log_prob: jax.Array  # log π_θ(a|s) under the current parameters
    old_log_prob: jax.Array  # log π_old(a|s), stored at collection time
    entropy: jax.Array  # H[π_θ(·|s)]
    values: jax.Array  # V_θ(s)
    old_values: jax.Array  # V_old(s), stored at collection time
    advantages: jax.Array  # GAE advantages (normalised or not, as the caller chose)
    returns: jax.Array  # GAE returns: advantages + old values


def ppo_loss(inputs: LossInputs, clip_eps, vf_coef, ent_coef, clip_value_loss: bool = True):
    """Total PPO loss L = L_clip + c_v·L_V − c_e·mean(H) and its metrics.

    Returns (loss scalar, dict of scalar metrics: policy_loss, value_loss, entropy, approx_kl
    (k3), clip_frac). `clip_value_loss` is static (a Python bool).
    """
    pg = clipped_surrogate(inputs.log_prob, inputs.old_log_prob, inputs.advantages, clip_eps)
    vl = value_loss(inputs.values, inputs.old_values, inputs.returns, clip_eps if clip_value_loss else None)
    ent = jnp.mean(inputs.entropy)
    loss = pg + vf_coef * vl - ent_coef * ent
    log_prob = lax.stop_gradient(inputs.log_prob)
    metrics = {
        "policy_loss": pg,
        "value_loss": vl,
        "entropy": ent,
        "approx_kl": approx_kl_k3(log_prob, inputs.old_log_prob),
        "clip_frac": clip_fraction(log_prob, inputs.old_log_prob, clip_eps),
    }
    return loss, metrics
