"""The optimizer of every trainer (PPO, next-token pretraining, the reward model, RL fine-tuning of a
language model): global-norm gradient clipping, then Adam, with an optional learning-rate schedule.

    g ← g · min(1, c / ‖g‖₂)   (‖g‖₂ over every leaf of the gradient pytree, "global" norm)
    m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,  θ ← θ − η_k m̂ / (√v̂ + ε)

Kingma & Ba 2015 (Adam); Huang et al. 2022, details 4 (Adam ε 1e-5) and 11 (global gradient clip).
"""

from __future__ import annotations

from typing import Any

import optax


def linear_to_zero(lr: Any, steps: int) -> optax.Schedule:
    """η_k = lr · (1 − k / steps), 0 from step `steps` on (PPO's learning-rate annealing over all
    minibatch steps; Huang et al. 2022, detail 4)."""
    return optax.linear_schedule(lr, 0.0, steps)


def warmup_cosine(lr: Any, steps: int) -> optax.Schedule:
    """A linear warm-up from 0 to `lr` over the first 5 % of `steps` (at least 1), then a cosine
    decay to lr / 10 at `steps` (language-model pretraining)."""
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps, lr / 10)


def make_optimizer(lr: Any, max_grad_norm: Any, eps: Any = 1e-8) -> optax.GradientTransformation:
    """Global-norm clipping to `max_grad_norm`, then Adam with learning rate `lr` (a number, a traced
    scalar, or a schedule step -> η) and epsilon `eps` (optax's default 1e-8)."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr, eps=eps))
