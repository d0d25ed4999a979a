"""Trust Region Policy Optimization (Schulman et al. 2015, "Trust Region Policy Optimization"),
the predecessor the PPO paper compares against, as pure functions of the surrogate and the KL.

    maximise  L(θ) = E[ρ_θ(a|s) · A(s, a)],   ρ_θ = π_θ(a|s) / π_old(a|s)
    subject to  KL̄(θ) = E_s[KL(π_old(·|s) ‖ π_θ(·|s))] ≤ δ

One step (the paper's practical algorithm, §6 and Appendix C):
1. g = ∇L(θ_old); F = ∇²KL̄(θ_old), the Fisher information matrix (KL̄ and its gradient vanish at
   θ_old, so its Hessian there is the Fisher matrix).
2. x ≈ (F + λI)⁻¹ g by `conjugate_gradient`, touching F only through Fisher-vector products
   F v = ∇(∇KL̄ · v) (`fisher_vector_product`, forward-over-reverse; no F is ever formed).
3. Full step s = √(2δ / xᵀFx) · x, the largest step along x whose quadratic KL model equals δ.
4. Backtracking line search: θ = θ_old + 0.5ᵏ s for k = 0, 1, …; the first θ whose surrogate
   improves and whose KL̄ ≤ δ is taken; if none is, θ_old is kept.

`trpo_policy_step` is the `trpo` objective's whole-batch policy step: the surrogate and the KL
over a rollout batch (`core.objectives.BatchView`) on the flattened parameters
(`jax.flatten_util.ravel_pytree`); the functions before it take flat vectors. `mean` is the
cross-device mean of a locally averaged quantity (identity on one device), so the gradient,
Fisher-vector products and line-search values cover the whole batch when it is split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

CG_ITERATIONS = 10
CG_DAMPING = 0.1  # λ: the CG solves (F + λI) x = g, as in OpenAI Baselines' TRPO
BACKTRACKS = 10


def _identity(x):
    return x


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iterations: int = CG_ITERATIONS):
    """Approximate x = M⁻¹ b for symmetric positive-definite M given as `matvec(v) = M v`.

    Hestenes–Stiefel CG from x_0 = 0: r_0 = p_0 = b; α_k = rᵀr / pᵀMp; x += αp; r −= αMp;
    β = r'ᵀr' / rᵀr; p = r + βp. Exact after dim(b) iterations in exact arithmetic; a step
    whose pᵀMp is not positive (converged, or rounding) leaves x unchanged. b [n] -> x [n].
    """

    def body(_, carry):
        x, r, p, rr = carry
        mp = matvec(p)
        curvature = jnp.vdot(p, mp)
        ok = curvature > 0
        alpha = jnp.where(ok, rr / jnp.where(ok, curvature, 1.0), 0.0)
        x, r = x + alpha * p, r - alpha * mp
        new_rr = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, new_rr / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, new_rr

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b))
    return lax.fori_loop(0, iterations, body, init)[0]


def fisher_vector_product(kl_fn: Callable[[jax.Array], jax.Array], theta: jax.Array, v: jax.Array, mean=_identity):
    """F v = ∇_θ(∇_θ KL̄(θ) · v) at θ: the Hessian-vector product of the mean KL, computed as a
    forward-mode derivative of the reverse-mode gradient (`jax.jvp` of `jax.grad`). theta, v [n]."""
    return mean(jax.jvp(jax.grad(kl_fn), (theta,), (v,))[1])


class TRPOStep(NamedTuple):
    """The outcome of one `trpo_step`."""

    theta: jax.Array  # the accepted parameters (θ_old when no step was accepted)
    surrogate: jax.Array  # L at theta
    kl: jax.Array  # KL̄ at theta
    step_fraction: jax.Array  # 0.5ᵏ of the accepted step, 0 when none was accepted


def natural_step(grad: jax.Array, fvp: Callable[[jax.Array], jax.Array], max_kl) -> jax.Array:
    """s = √(2δ / xᵀFx) · x with x = CG solution of F x = g: the step to the KL radius δ of the
    quadratic model ½ sᵀF s = δ. A vanishing curvature (g = 0) gives s = 0. [n] -> [n]."""
    x = conjugate_gradient(fvp, grad)
    curvature = jnp.vdot(x, fvp(x))
    return jnp.where(curvature > 0, jnp.sqrt(2.0 * max_kl / jnp.where(curvature > 0, curvature, 1.0)), 0.0) * x


def line_search(surrogate_fn, kl_fn, theta: jax.Array, step: jax.Array, max_kl, mean=_identity) -> TRPOStep:
    """Backtrack θ_old + 0.5ᵏ s, k = 0..BACKTRACKS−1; take the first that improves L and keeps
    KL̄ ≤ δ (`max_kl`), else keep θ_old."""
    base = mean(surrogate_fn(theta))

    def cond(carry):
        k, accepted, *_ = carry
        return (k < BACKTRACKS) & ~accepted

    def body(carry):
        k, _, _, _, _, _ = carry
        fraction = 0.5 ** k.astype(jnp.float32)
        candidate = theta + fraction * step
        value, kl = mean(surrogate_fn(candidate)), mean(kl_fn(candidate))
        accepted = (value > base) & (kl <= max_kl)
        return k + 1, accepted, candidate, value, kl, fraction

    zero = jnp.float32(0.0)
    init = (jnp.int32(0), jnp.bool_(False), theta, base, zero, zero)
    _, accepted, candidate, value, kl, fraction = lax.while_loop(cond, body, init)
    return TRPOStep(
        jnp.where(accepted, candidate, theta),
        jnp.where(accepted, value, base),
        jnp.where(accepted, kl, zero),
        jnp.where(accepted, fraction, zero),
    )


def trpo_step(surrogate_fn, kl_fn, theta: jax.Array, max_kl, mean=_identity, damping: float = CG_DAMPING) -> TRPOStep:
    """One TRPO policy update (see the module docstring).

    surrogate_fn(θ) -> L(θ), the local mean of ρ_θ·A (to be maximised); kl_fn(θ) -> the local
    mean KL(π_old ‖ π_θ) with π_old held fixed; theta [n] = θ_old (flat); max_kl = δ (traced).
    """
    grad = mean(jax.grad(surrogate_fn)(theta))
    fvp = lambda v: fisher_vector_product(kl_fn, theta, v, mean) + damping * v  # noqa: E731
    return line_search(surrogate_fn, kl_fn, theta, natural_step(grad, fvp, max_kl), max_kl, mean)


def batch_surrogate(view, unravel, theta: jax.Array) -> jax.Array:
    """L(θ) = mean(ρ_θ · A) over the batch, ρ_θ = exp(log π_θ(a|s) − log π_old(a|s)) (to be
    maximised); `view` a `BatchView` with arrays [T, N], θ flat [n]."""
    log_prob = view.log_prob(view.dist(unravel(theta)))
    return jnp.mean(jnp.exp(log_prob - view.old_log_prob) * view.advantages)


def batch_mean_kl(view, old_dist, unravel, theta: jax.Array) -> jax.Array:
    """KL̄(θ) = mean_s KL(π_old(·|s) ‖ π_θ(·|s)) over the batch's states, exact per state, π_old
    (head outputs `old_dist`) held fixed."""
    return jnp.mean(view.kl(old_dist, view.dist(unravel(theta))))


def trpo_policy_step(view, params, hparams, mean=_identity):
    """The `trpo` objective's policy step: `trpo_step` on the flattened `params` within radius
    δ = `hparams.max_kl`; returns (params, metrics policy_loss = −L, approx_kl = KL̄)."""
    theta, unravel = ravel_pytree(params)
    old_dist = lax.stop_gradient(view.dist(params))
    surrogate = functools.partial(batch_surrogate, view, unravel)
    kl = functools.partial(batch_mean_kl, view, old_dist, unravel)
    step = trpo_step(surrogate, kl, theta, hparams.max_kl, mean)
    return unravel(step.theta), {"policy_loss": -step.surrogate, "approx_kl": step.kl}
