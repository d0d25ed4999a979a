"""Rotary position embeddings of the Llama / Qwen2 / Mistral decoder family, with the checkpoint's
base and `rope_scaling`.

Frequencies (Su et al. 2021, "RoFormer"), D = head_dim:

    θ_i = base^(−2i/D),  i = 0..D/2−1

and a scaling rule rewrites them (one registry entry per rule, chosen by the checkpoint's
`rope_scaling["rope_type"]` or its older spelling `["type"]`):

- `default`: unchanged.
- `linear` (position interpolation, Chen et al. 2023): θ_i / factor.
- `llama3` (Llama 3.1): wavelengths λ_i = 2π/θ_i longer than L/low_freq_factor are divided by
  `factor`, those shorter than L/high_freq_factor kept, and those between interpolated with
  s = (L/λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor):
  θ_i ← (1 − s) θ_i / factor + s θ_i, where L = `original_max_position_embeddings`.

Any other rule (dynamic, yarn, longrope, ...) is refused with one `ConfigError` naming it.

A feature pair (x_i, x_{i+D/2}) at position p is rotated by the angle p·θ_i ("rotate half"
layout of the Hugging Face checkpoints; q and k projections are stored for this layout).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.errors import ConfigError


def base_frequencies(theta: float, head_dim: int) -> np.ndarray:
    """θ_i = theta^(−2i/D): [D/2] float64."""
    return 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def _default(freq: np.ndarray, scaling: dict) -> np.ndarray:
    return freq


def _linear(freq: np.ndarray, scaling: dict) -> np.ndarray:
    return freq / float(scaling["factor"])


def _llama3(freq: np.ndarray, scaling: dict) -> np.ndarray:
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / freq
    scaled = np.where(wavelength > context / low, freq / factor, freq)
    smooth = (context / wavelength - low) / (high - low)
    between = (wavelength >= context / high) & (wavelength <= context / low)
    return np.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


SCALINGS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "default": _default,
    "linear": _linear,
    "llama3": _llama3,
}
REQUIRED = {"default": (), "linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}


def scaling_type(scaling: dict | None) -> str:
    """The rule named by a checkpoint's `rope_scaling` (None or no name: `default`)."""
    if not scaling:
        return "default"
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def check_scaling(scaling: dict | None) -> None:
    """Raise `ConfigError("rope_scaling", ...)` for an unknown rule or a missing parameter."""
    name = scaling_type(scaling)
    if name not in SCALINGS:
        raise ConfigError("rope_scaling", f"type {name!r} is not supported; supported: {', '.join(SCALINGS)}")
    missing = [key for key in REQUIRED[name] if key not in (scaling or {})]
    if name == "llama3" and "original_max_position_embeddings" not in (scaling or {}):
        missing.append("original_max_position_embeddings")
    if missing:
        raise ConfigError("rope_scaling", f"type {name!r} needs {', '.join(missing)}")


def frequencies(theta: float, head_dim: int, scaling: dict | None) -> np.ndarray:
    """The scaled frequencies θ_i: [D/2] float32 (validated with `check_scaling`)."""
    check_scaling(scaling)
    return SCALINGS[scaling_type(scaling)](base_frequencies(theta, head_dim), scaling or {}).astype(np.float32)


def rotate(x: jax.Array, positions: jax.Array, freq: jax.Array) -> jax.Array:
    """Rotary embedding of x [B, H, T, D] at positions [B, T] with frequencies freq [D/2]:
    (x_i, x_{i+D/2}) -> (x_i cos a − x_{i+D/2} sin a, x_i sin a + x_{i+D/2} cos a), a = p·θ_i.
    Angles in float32; the result has x's dtype."""
    half = x.shape[-1] // 2
    angle = positions.astype(jnp.float32)[:, None, :, None] * freq[None, None, None, :]  # [B, 1, T, D/2]
    cos, sin = jnp.cos(angle).astype(x.dtype), jnp.sin(angle).astype(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
