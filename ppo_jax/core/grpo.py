"""Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", §4.1): PPO without a critic.

For each prompt q a group of G completions o_1..o_G is sampled from π_old and scored with rewards
R_1..R_G. The baseline is the group itself: every token of completion i gets the advantage
Â_i = (R_i − mean(R)) / (std(R) + eps). The loss is the clipped surrogate on those advantages plus
a penalty β·KL[π_θ ‖ π_ref] to a frozen reference policy, estimated per token with the unbiased,
non-negative k3 estimator. `grpo_loss` is the fixed-length form: every completion has the same
length L (no padding), so the paper's 1/G Σ_i 1/|o_i| Σ_t is the mean over all B·L tokens;
`ppo_jax.core.token_losses` has the ragged, masked pieces and the other aggregations.

Sequence-level baselines (`SEQUENCE_ADVANTAGES`, each `f(rewards [P, G], scale=...) -> [P, G]`): the
group mean of GRPO, the leave-one-out mean of RLOO, and the batch mean of REINFORCE with a
baseline; `scale` divides by the standard deviation (GRPO; Dr. GRPO drops it).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.losses import approx_kl_k3, clip_fraction, clipped_surrogate, kl_k3_terms


def group_advantages(rewards, eps=1e-8, scale=True):
    """Group-relative advantages Â_{g,i} = (R_{g,i} − mean_i R_{g,i}) / (std_i R_{g,i} + eps).

    Args: rewards [P, G], P groups (prompts) of G completions; eps keeps a group of equal rewards
    at Â = 0 instead of 0/0. std is the population standard deviation (divide by G), so each
    group's advantages have mean 0 and standard deviation 1 (up to eps). `scale=False` keeps
    Â = R − mean (Dr. GRPO, Liu et al. 2025: dividing by the std up-weights groups that are
    almost all right or all wrong). Returns [P, G].
    """
    centred = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
    if not scale:
        return centred
    return centred / (jnp.std(rewards, axis=-1, keepdims=True) + eps)


def rloo_advantages(rewards, eps=1e-8, scale=False):
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics"):

        Â_{g,i} = R_{g,i} − 1/(G − 1) Σ_{j≠i} R_{g,j} = G/(G − 1) · (R_{g,i} − mean_j R_{g,j})

    The baseline of each sample excludes it, so the estimate is unbiased. `scale` divides by the
    group std as GRPO does. rewards [P, G] (G ≥ 2) -> [P, G]."""
    g = rewards.shape[-1]
    adv = g / (g - 1) * (rewards - jnp.mean(rewards, axis=-1, keepdims=True))
    return adv / (jnp.std(rewards, axis=-1, keepdims=True) + eps) if scale else adv


def reinforce_advantages(rewards, eps=1e-8, scale=False):
    """REINFORCE with a batch-mean baseline (Williams 1992): Â = R − mean over all P·G
    completions of the update, divided by the batch std when `scale` (as REINFORCE++, Hu 2025,
    normalises globally). rewards [P, G] -> [P, G]."""
    centred = rewards - jnp.mean(rewards)
    return centred / (jnp.std(rewards) + eps) if scale else centred


SEQUENCE_ADVANTAGES: dict[str, Callable[..., jax.Array]] = {
    "grpo": group_advantages,
    "rloo": rloo_advantages,
    "reinforce": reinforce_advantages,
}


def equal_reward_groups(rewards) -> jax.Array:
    """Groups whose G rewards are all equal (they carry no group-relative signal; DAPO's dynamic
    sampling, Yu et al. 2025, §3.2, filters them): rewards [P, G] -> [P] bool."""
    return jnp.all(rewards == rewards[:, :1], axis=-1)


def reference_kl(log_prob, ref_log_prob):
    """k3 estimate of KL[π_θ ‖ π_ref] over tokens sampled from π_θ (GRPO eq. 4; Schulman 2020).

        D = mean_t( π_ref(o_t|s_t)/π_θ(o_t|s_t) − log(π_ref(o_t|s_t)/π_θ(o_t|s_t)) − 1 )

    Every term is ≥ 0 (x − log x − 1 ≥ 0 with x = π_ref/π_θ) and 0 when the policies agree on the
    token. It is `losses.kl_k3_terms` with the samples from π_θ.
    Args: log_prob (log π_θ), ref_log_prob (log π_ref), any equal shapes. Returns a scalar.
    """
    return jnp.mean(kl_k3_terms(log_prob, ref_log_prob))


def grpo_loss(log_prob, old_log_prob, ref_log_prob, advantages, clip_eps, kl_coef):
    """GRPO loss (Shao et al. 2024, eq. 3), to be minimised.

        L = −mean_{i,t} min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_i) + β · D_k3[π_θ ‖ π_ref]
        ρ_{i,t} = π_θ(o_{i,t}|q, o_{i,<t}) / π_old(o_{i,t}|q, o_{i,<t})

    Args: log_prob, old_log_prob, ref_log_prob [B, L] per-token log-probabilities of the sampled
    completions under the current, sampling and reference policies; advantages [B] per-completion
    (from `group_advantages`, flattened), broadcast over the L tokens; clip_eps ε and kl_coef β
    scalars. Returns (loss, metrics: policy_loss, kl, approx_kl (k3 to π_old), clip_frac).
    """
    token_adv = jnp.broadcast_to(advantages[:, None], log_prob.shape)
    policy = clipped_surrogate(log_prob, old_log_prob, token_adv, clip_eps)
    kl = reference_kl(log_prob, ref_log_prob)
    loss = policy + kl_coef * kl
    detached = lax.stop_gradient(log_prob)
    metrics = {
        "policy_loss": policy,
        "kl": lax.stop_gradient(kl),
        "approx_kl": approx_kl_k3(detached, old_log_prob),
        "clip_frac": clip_fraction(detached, old_log_prob, clip_eps),
    }
    return loss, metrics


def repeat_prompts(prompts: jax.Array, group_size: int) -> jax.Array:
    """Each prompt G times in a row: [P, ...] -> [P·G, ...], so a reshape to [P, G] finds its group."""
    return jnp.repeat(prompts, group_size, axis=0)
