"""Policy-gradient losses of language-model RL over ragged completions, one per `policy_loss`
option (`POLICY_LOSSES`, named as verl's `policy_loss.loss_mode`), and REINFORCE++'s advantages.

Every loss has the signature

    loss(log_prob, old_log_prob, advantages, mask, clip_eps_low, clip_eps_high)
        -> (ℓ [B, L] per-token loss, clipped [B, L] ∈ {0, 1})

with log_prob = log π_θ(o_{i,t}), old_log_prob = log π_old(o_{i,t}) (both 0 on masked tokens, see
`token_losses.masked_values`), advantages Â_{i,t} and the mask m [B, L]. The trainer aggregates ℓ
with the weights of its `loss_aggregation` (`token_losses.AGGREGATIONS`), so each loss is stated
per token; `clipped` marks the tokens its clip touches (the clip-fraction metric).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.losses import gae, scale_centred
from ppo_jax.core.token_losses import clipped_surrogate_tokens, clipped_tokens, masked_mean, token_rewards


def vanilla(log_prob, old_log_prob, advantages, mask, clip_eps_low, clip_eps_high):
    """PPO's per-token clipped surrogate (Schulman et al. 2017, eq. 7; clip-higher, DAPO):

        ρ_{i,t} = π_θ(o_{i,t}) / π_old(o_{i,t}),
        ℓ_{i,t} = −min(ρ_{i,t} Â_{i,t}, clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) Â_{i,t})

    [B, L] -> ([B, L], [B, L]); `mask` is not read (the aggregation weights hold it)."""
    loss = clipped_surrogate_tokens(log_prob, old_log_prob, advantages, clip_eps_low, clip_eps_high)
    return loss, clipped_tokens(log_prob, old_log_prob, clip_eps_low, clip_eps_high)


def sequence_log_ratio(log_prob, old_log_prob, mask):
    """Length-normalised log-ratio of each completion, log s_i = 1/|o_i| Σ_t m_{i,t} (log π_θ −
    log π_old)(o_{i,t}): [B, L] -> [B] (0 for an empty row)."""
    lengths = jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    return jnp.sum((log_prob - old_log_prob) * mask, axis=1) / lengths


def gspo(log_prob, old_log_prob, advantages, mask, clip_eps_low, clip_eps_high):
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 5–7): one importance
    ratio per completion, the geometric mean of its token ratios, clipped as a whole:

        s_i = (π_θ(o_i|q) / π_old(o_i|q))^{1/|o_i|} = exp(1/|o_i| Σ_t log ρ_{i,t})
        J = 1/G Σ_i min(s_i Â_i, clip(s_i, 1 − ε_low, 1 + ε_high) Â_i)

    Written per token as GSPO-token (eq. 13): s_{i,t} = sg[s_i] · π_θ(o_{i,t}) / sg[π_θ(o_{i,t})],
    ℓ_{i,t} = −min(s_{i,t} Â_{i,t}, clip(s_{i,t}, ·) Â_{i,t}). s_{i,t} equals s_i in value, and
    with Â_{i,t} = Â_i aggregated by `seq-mean-token-mean` (1/G Σ_i 1/|o_i| Σ_t) the loss and its
    gradient, −Â_i ∇s_i where unclipped, are GSPO's exactly. The paper clips at ε_low = 3e-4,
    ε_high = 4e-4. [B, L] -> ([B, L], [B, L]); `clipped` is 1 on every token of a clipped sequence."""
    log_s = lax.stop_gradient(sequence_log_ratio(log_prob, old_log_prob, mask))[:, None]
    log_ratio = log_s + log_prob - lax.stop_gradient(log_prob)
    loss = clipped_surrogate_tokens(log_ratio, jnp.zeros_like(log_ratio), advantages, clip_eps_low, clip_eps_high)
    clipped = clipped_tokens(log_s, jnp.zeros_like(log_s), clip_eps_low, clip_eps_high)
    return loss, jnp.broadcast_to(clipped, log_prob.shape) * mask


def cispo(log_prob, old_log_prob, advantages, mask, clip_eps_low, clip_eps_high):
    """CISPO (MiniMax 2025, "MiniMax-M1", eq. 4–5): clip the importance-sampling weight, not the
    update, and stop its gradient, so every token keeps a gradient:

        r̂_{i,t} = clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high),   ℓ_{i,t} = −sg(r̂_{i,t}) Â_{i,t} log π_θ(o_{i,t})

    ∇ℓ_{i,t} = −r̂_{i,t} Â_{i,t} ∇log π_θ(o_{i,t}). The paper aggregates by `token-mean`, sets ε_low
    large enough to remove the lower bound (here ε_low = 1: r̂ ≥ 0) and tunes ε_high.
    [B, L] -> ([B, L], [B, L])."""
    ratio = jnp.exp(log_prob - old_log_prob)
    weight = lax.stop_gradient(jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high))
    loss = -weight * advantages * log_prob
    return loss, clipped_tokens(lax.stop_gradient(log_prob), old_log_prob, clip_eps_low, clip_eps_high) * mask


POLICY_LOSSES: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "vanilla": vanilla,
    "gspo": gspo,
    "cispo": cispo,
}


def reinforce_pp_advantages(sequence_reward, kl, mask, kl_coef, gamma, keep=None):
    """REINFORCE++ (Hu 2025, "REINFORCE++", eq. 8–10): the return to go of the token rewards
    (the k1 KL to the reference on every token, the sequence reward at the last), normalised over
    every valid token of the whole batch (global, not per group or minibatch):

        r_{i,t} = m_{i,t} (−β k_{i,t} + [t = |o_i| − 1] R_i),   A_{i,t} = Σ_{t' ≥ t} γ^{t' − t} r_{i,t'}
        Â_{i,t} = (A_{i,t} − mean_batch A) / std_batch A     (0 for a batch without spread)

    (γ = 1: A_{i,t} = R_i − β Σ_{t' ≥ t} k_{i,t'}, the paper's eq. 8). sequence_reward R [B], kl k
    [B, L] (masked), mask [B, L], `keep` [B] (1: in the loss; the statistics use only those rows).
    Returns Â [B, L], 0 on masked tokens."""
    rewards = token_rewards(sequence_reward, kl, mask, kl_coef)
    last = jnp.arange(mask.shape[1])[None, :] == (jnp.sum(mask, axis=1) - 1)[:, None]
    zeros = jnp.zeros_like(rewards.T)
    # gae with V = 0 and λ = 1 is the discounted return to go; the last valid token ends the episode.
    returns, _ = gae(rewards.T, zeros, zeros, last.T, jnp.zeros_like(last.T), gamma, 1.0)
    loss_mask = mask if keep is None else mask * keep[:, None]
    returns = returns.T
    centred = (returns - masked_mean(returns, loss_mask)) * loss_mask
    std = jnp.sqrt(masked_mean(jnp.square(centred), loss_mask))
    return scale_centred(centred, std, jnp.max(jnp.abs(returns * loss_mask)))
