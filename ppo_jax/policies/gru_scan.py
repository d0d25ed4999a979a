"""The GRU recurrence over a sequence with a hand-written backward pass.

Differentiating `lax.scan` of the cell accumulates the recurrent weights' gradient inside the
backward loop: one [H, 3H] read-modify-write per time step, which dominates a small GRU's update
on a CPU. Here the backward scan carries only ∂L/∂h and emits the gates' gradients; the weight
gradient is then one product over all T·N steps at once:

    ∂L/∂W_h = Σ_t h̃_{t−1}ᵀ · ∂L/∂g_t,   g_t = h̃_{t−1} W_h + b_h,   h̃_{t−1} = 0 where reset_t else h_{t−1}

Forward (Cho et al. 2014, the `gru` family's equations), with x_t = W_i u_t + b_i precomputed:
    r = σ(x_r + g_r),  z = σ(x_z + g_z),  n = tanh(x_n + r ⊙ g_n),  h_t = (1 − z) ⊙ n + z ⊙ h̃_{t−1}
Backward, given ∂h = ∂L/∂h_t (from the output and from step t + 1):
    ∂n = ∂h ⊙ (1 − z),  ∂z = ∂h ⊙ (h̃_{t−1} − n),  ∂a_n = ∂n ⊙ (1 − n²)
    ∂x = [∂z_r, ∂z_z, ∂a_n] with ∂z_r = (∂a_n ⊙ g_n) ⊙ r(1 − r), ∂z_z = ∂z ⊙ z(1 − z)
    ∂g = [∂z_r, ∂z_z, ∂a_n ⊙ r],  ∂h̃_{t−1} = ∂h ⊙ z + ∂g W_hᵀ,  ∂h_{t−1} = 0 where reset_t else ∂h̃_{t−1}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _gates(h_prev, x, w_h, b_h):
    """One step: (h_t, residuals r, z, n, g_n) from h̃_{t−1} [N, H] and x_t [N, 3H]."""
    xr, xz, xn = jnp.split(x, 3, axis=-1)
    gr, gz, gn = jnp.split(h_prev @ w_h + b_h.reshape((1,) * (h_prev.ndim - 1) + (-1,)), 3, axis=-1)
    r = jax.nn.sigmoid(xr + gr)
    z = jax.nn.sigmoid(xz + gz)
    n = jnp.tanh(xn + r * gn)
    return (1.0 - z) * n + z * h_prev, (r, z, n, gn)


def _masked(h, reset):
    return jnp.where(reset[..., None], 0.0, h)


def _forward(w_h, b_h, h0, xs, resets):
    def step(h, inputs):
        x, reset = inputs
        h_prev = _masked(h, reset)
        h, res = _gates(h_prev, x, w_h, b_h)
        return h, (h, h_prev, res)

    _, (hs, h_prevs, res) = lax.scan(step, h0, (xs, resets))
    return hs, (h_prevs, res)


@jax.custom_vjp
def gru_sequence(w_h, b_h, h0, xs, resets):
    """h_1..h_T [T, N, H] from h_0 [N, H], projected inputs xs [T, N, 3H] and resets [T, N]
    (h̃ = 0 before a reset step); w_h [H, 3H], b_h [3H] are the recurrent gates' weights."""
    return _forward(w_h, b_h, h0, xs, resets)[0]


def _fwd(w_h, b_h, h0, xs, resets):
    hs, (h_prevs, res) = _forward(w_h, b_h, h0, xs, resets)
    return hs, (w_h, h_prevs, res, resets)


def _bwd(saved, d_hs):
    w_h, h_prevs, (r, z, n, gn), resets = saved

    def step(dh_next, inputs):
        d_out, h_prev, r, z, n, gn, reset = inputs
        dh = d_out + dh_next
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        dr = da_n * gn * r * (1.0 - r)
        dx = jnp.concatenate([dr, dz, da_n], axis=-1)
        dg = jnp.concatenate([dr, dz, da_n * r], axis=-1)
        dh_prev = dh * z + dg @ w_h.T
        return _masked(dh_prev, reset), (dx, dg)

    inputs = (d_hs, h_prevs, r, z, n, gn, resets)
    dh0, (dxs, dgs) = lax.scan(step, jnp.zeros_like(d_hs[0]), inputs, reverse=True)
    dw_h = jnp.einsum("tnh,tng->hg", h_prevs, dgs)
    db_h = jnp.sum(dgs, axis=(0, 1))
    return dw_h, db_h, dh0, dxs, None


gru_sequence.defvjp(_fwd, _bwd)
