"""Per-token losses over variable-length completions, and how to aggregate them.

Layout: completions are [B, L] (B sequences, L = the maximum completion length); sequence b has
|o_b| valid tokens, its tokens up to and including its first EOS (all L if it has none: a
truncated completion). `mask` m_{b,t} ∈ {0, 1} marks them; every per-token quantity (log-probs,
KL, values, advantages, entropy) is multiplied by it, so nothing after EOS reaches a loss.

Aggregation (`AGGREGATIONS`): each mode is a function `mask -> weights w [B, L]`, and the loss is
Σ_{b,t} w_{b,t} ℓ_{b,t}. Writing a mode as weights makes two properties plain:

- its length bias: the weight of one token of a sequence of length n (see each docstring);
- micro-batching: weights computed on the whole minibatch and sliced with the rows give the same
  loss, and the same gradient, summed over micro-batches as on the whole (`aggregate`).

Names as in verl and Tunix. B' below is the number of sequences with at least one valid token
(B, unless whole sequences are masked out, e.g. by skipping equal-reward groups).

KL estimators (`KL_ESTIMATORS`, Schulman 2020, "Approximating KL Divergence"): per-token
estimates of KL[π_θ ‖ π_ref] from tokens sampled from π_θ, with log r = log π_ref − log π_θ.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ppo_jax.core.losses import kl_k3_terms

# --- masks -----------------------------------------------------------------------------------


def completion_mask(completions: jax.Array, eos_id: int) -> jax.Array:
    """m_{b,t} = 1 if no EOS occurs in row b before position t (EOS itself is valid): [B, L] int
    -> [B, L] float32. A row without EOS is valid throughout (truncated at L)."""
    is_eos = (completions == eos_id).astype(jnp.int32)
    before = jnp.cumsum(is_eos, axis=1) - is_eos
    return (before == 0).astype(jnp.float32)


def last_token_index(mask: jax.Array) -> jax.Array:
    """Index of the last valid token, |o_b| − 1: mask [B, L] -> [B] int32 (−1 for an empty row)."""
    return (jnp.sum(mask, axis=1) - 1).astype(jnp.int32)


def is_truncated(completions: jax.Array, eos_id: int) -> jax.Array:
    """Rows that never emit EOS (cut at the maximum length): [B, L] -> [B] bool."""
    return jnp.logical_not(jnp.any(completions == eos_id, axis=1))


# --- aggregation ---------------------------------------------------------------------------


def _sequences(mask: jax.Array) -> jax.Array:
    """B' = number of rows with at least one valid token (at least 1)."""
    return jnp.maximum(jnp.sum(jnp.any(mask > 0, axis=1)), 1)


def token_mean(mask: jax.Array) -> jax.Array:
    """Every valid token of the batch weighs the same (DAPO, Yu et al. 2025, eq. 12):

        L = 1/Σ_b|o_b| · Σ_b Σ_t ℓ_{b,t},     w_{b,t} = m_{b,t} / Σ m

    Token weight 1/Σ|o|, independent of its sequence's length; a long sequence counts more in
    total. mask [B, L] -> weights [B, L]."""
    return mask / jnp.maximum(jnp.sum(mask), 1.0)


def seq_mean_token_mean(mask: jax.Array) -> jax.Array:
    """Mean over tokens inside each sequence, then over sequences (GRPO as published, Shao et
    al. 2024, eq. 3):

        L = 1/B' · Σ_b 1/|o_b| Σ_t ℓ_{b,t},     w_{b,t} = m_{b,t} / (B' |o_b|)

    Token weight 1/(B' n) for a sequence of length n: tokens of short sequences weigh more, the
    length bias Liu et al. 2025 (Dr. GRPO) point out. mask [B, L] -> weights [B, L]."""
    lengths = jnp.sum(mask, axis=1, keepdims=True)
    return mask / (jnp.maximum(lengths, 1.0) * _sequences(mask))


def seq_mean_token_sum(mask: jax.Array) -> jax.Array:
    """Sum over tokens inside each sequence, mean over sequences:

        L = 1/B' · Σ_b Σ_t ℓ_{b,t},     w_{b,t} = m_{b,t} / B'

    Token weight 1/B', independent of length; the loss scale grows with the lengths.
    mask [B, L] -> weights [B, L]."""
    return mask / _sequences(mask)


def seq_mean_token_sum_norm(mask: jax.Array) -> jax.Array:
    """Token sums divided by a constant, the maximum completion length L (Dr. GRPO, Liu et al.
    2025, "Understanding R1-Zero-Like Training", §3.1):

        L = 1/(B' L) · Σ_b Σ_t ℓ_{b,t},     w_{b,t} = m_{b,t} / (B' L)

    Token weight 1/(B' L): no per-length bias and a scale that does not drift with the lengths.
    (verl and Tunix divide by L only, a constant factor B' larger.) mask [B, L] -> weights [B, L]."""
    return mask / (_sequences(mask) * mask.shape[1])


AGGREGATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum": seq_mean_token_sum,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}


def aggregate(token_losses: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_{b,t} w_{b,t} ℓ_{b,t}: [B, L] × [B, L] -> scalar. For micro-batches, pass the rows of
    weights computed on the whole minibatch: the micro-batch losses then sum to the whole loss."""
    return jnp.sum(token_losses * weights)


def masked_values(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x where m > 0, else 0: [B, L] -> [B, L]. Apply it to log-probs *before* any exp or
    log-ratio: a padded token's log-prob can be far below −88.7, where exp overflows to inf and
    a mask applied afterwards gives inf · 0 = NaN (in the value and in the gradient). `where`
    also passes a zero gradient to the masked entries, finite or not."""
    return jnp.where(mask > 0, x, jnp.zeros_like(x))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Σ m x / Σ m over all valid tokens (0 if none; a NaN or Inf on a masked token is ignored)."""
    return jnp.sum(masked_values(x, mask) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x − μ) / (σ + eps) with μ, σ the mean and population std over valid tokens; masked
    tokens become 0. PPO's per-minibatch advantage normalisation over ragged completions."""
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_mean(jnp.square(x - mean), mask))
    return (x - mean) / (std + eps) * mask


# --- KL estimators ---------------------------------------------------------------------------


def kl_k1(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """k1 = −log r = log π_θ − log π_ref. Unbiased (E_{π_θ}[k1] = KL[π_θ ‖ π_ref]), high variance,
    negative for some tokens. Same shapes in and out."""
    return log_prob - ref_log_prob


def kl_k2(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """k2 = ½ (log r)². Biased (E[k2] agrees with KL only to second order in log r when the
    policies are close), low variance, non-negative; with the samples held fixed, E[∇k2] is the
    gradient of the true KL. Same shapes in and out."""
    return 0.5 * jnp.square(ref_log_prob - log_prob)


def kl_k3(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """k3 = (r − 1) − log r. Unbiased, non-negative, low variance; GRPO's penalty (Shao et al.
    2024, eq. 4). Same shapes in and out."""
    return kl_k3_terms(log_prob, ref_log_prob)


KL_ESTIMATORS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


# --- per-token PPO terms -------------------------------------------------------------------


def clipped_surrogate_tokens(log_prob, old_log_prob, advantages, clip_eps_low, clip_eps_high):
    """Per-token clipped surrogate loss with separate lower and upper clip ranges (PPO, Schulman
    et al. 2017, eq. 7; clip-higher, DAPO, Yu et al. 2025, eq. 10):

        ℓ_{b,t} = −min(ρ_{b,t} Â_{b,t}, clip(ρ_{b,t}, 1 − ε_low, 1 + ε_high) Â_{b,t})

    log_prob, old_log_prob, advantages [B, L] (a sequence-level Â broadcast over its tokens) ->
    [B, L]. ε_low = ε_high gives PPO's clip."""
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    return -jnp.minimum(ratio * advantages, clipped * advantages)


def clipped_tokens(log_prob, old_log_prob, clip_eps_low, clip_eps_high) -> jax.Array:
    """1 where ρ lies outside [1 − ε_low, 1 + ε_high], else 0: [B, L] -> [B, L] float32."""
    ratio = jnp.exp(log_prob - old_log_prob)
    return jnp.logical_or(ratio < 1.0 - clip_eps_low, ratio > 1.0 + clip_eps_high).astype(jnp.float32)


def value_loss_tokens(values, old_values, returns, clip_eps=None) -> jax.Array:
    """Per-token critic loss ½ (V − R)², or with clipping ½ max((V − R)², (V_clip − R)²),
    V_clip = V_old + clip(V − V_old, −ε, ε) (as `losses.value_loss`). [B, L] -> [B, L]."""
    unclipped = jnp.square(values - returns)
    if clip_eps is None:
        return 0.5 * unclipped
    v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, jnp.square(v_clipped - returns))


def token_rewards(sequence_reward, kl, mask, kl_coef) -> jax.Array:
    """RLHF per-token reward (Ouyang et al. 2022; Ziegler et al. 2019): a KL penalty on every
    valid token and the delayed sequence reward on the last one (the EOS token, or the last token
    of a truncated completion):

        r_{b,t} = m_{b,t} (−β k_{b,t} + [t = |o_b| − 1] R_b)

    sequence_reward R [B], kl k [B, L] (a per-token KL estimate), mask [B, L] -> [B, L]."""
    last = jnp.arange(mask.shape[1])[None, :] == last_token_index(mask)[:, None]
    return mask * (-kl_coef * kl) + last * sequence_reward[:, None]
