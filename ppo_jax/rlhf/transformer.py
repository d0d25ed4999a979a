"""A small causal transformer language model (Flax) with a scalar head and a KV cache.

Pre-norm blocks (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"):

    h ← h + Attn(LN(h)),   h ← h + MLP(LN(h)),   logits = W_out LN_f(h),   scalar = w_s · LN_f(h)

Positions are learned embeddings added to the token embeddings, or rotary embeddings applied to
queries and keys (Su et al. 2021, "RoFormer"). Causal multi-head attention (Vaswani et al. 2017):
position t attends to positions ≤ t.

Index convention (as for the GRU): the outputs at position t read tokens 0..t; the logits there
predict token t + 1, and the scalar head there is V(s) of the state that ends with token t.

Sampling runs on a KV cache: the prompt is processed once (`prefill`), then each new token is one
`decode` step that appends its keys and values to the cache and attends over it, O(T) work per
token instead of re-running the whole prefix (O(T²)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

POSITIONS = ("learned", "rotary")


class KVCache(NamedTuple):
    """Keys and values of every layer for positions written so far: each [layers, B, H, T_max, D_h]."""

    keys: jax.Array
    values: jax.Array


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding (Su et al. 2021): rotate feature pairs (x_i, x_{i+D/2}) by the
    angle p·θ_i, θ_i = 10000^(−2i/D). x [B, H, T, D] (D even), positions [T] -> [B, H, T, D].
    Then q_p · k_s depends on the positions only through p − s."""
    half = x.shape[-1] // 2
    freq = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions.astype(jnp.float32)[:, None] * freq[None, :]  # [T, D/2]
    cos, sin = jnp.cos(angle)[None, None], jnp.sin(angle)[None, None]
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """softmax(q kᵀ / √D_h, masked) v: q [B, H, T_q, D], k and v [B, H, T_k, D], allowed [T_q, T_k]
    bool -> [B, H, T_q, D]. Disallowed scores are set to a large negative number before the softmax."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = jnp.where(allowed[None, None], scores, jnp.finfo(scores.dtype).min)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


class Block(nn.Module):
    """One pre-norm block: causal self-attention and an MLP, each added to the residual stream."""

    d_model: int
    num_heads: int
    mlp_mult: int
    rotary: bool

    def setup(self):
        self.norm_attn = nn.LayerNorm(name="norm_attn")
        self.qkv = nn.Dense(3 * self.d_model, name="qkv")
        self.proj = nn.Dense(self.d_model, name="proj")
        self.norm_mlp = nn.LayerNorm(name="norm_mlp")
        self.mlp_in = nn.Dense(self.mlp_mult * self.d_model, name="mlp_in")
        self.mlp_out = nn.Dense(self.d_model, name="mlp_out")

    def heads(self, x: jax.Array, positions: jax.Array):
        """(q, k, v) of x [B, T, d], each [B, H, T, d/H], rotary applied to q and k if set."""
        b, t, _ = x.shape
        qkv = self.qkv(self.norm_attn(x)).reshape(b, t, 3, self.num_heads, -1)
        q, k, v = (jnp.swapaxes(qkv[:, :, i], 1, 2) for i in range(3))
        if self.rotary:
            q, k = rotary(q, positions), rotary(k, positions)
        return q, k, v

    def finish(self, x: jax.Array, attended: jax.Array) -> jax.Array:
        """Residual adds of the attention output [B, H, T, d/H] and of the MLP: [B, T, d]."""
        b, _, t, _ = attended.shape
        x = x + self.proj(jnp.swapaxes(attended, 1, 2).reshape(b, t, self.d_model))
        return x + self.mlp_out(nn.gelu(self.mlp_in(self.norm_mlp(x))))

    def __call__(self, x: jax.Array, positions: jax.Array):
        """Causal block over a whole sequence x [B, T, d]: (x', (k, v)) with k, v for the cache."""
        q, k, v = self.heads(x, positions)
        causal = positions[:, None] >= positions[None, :]
        return self.finish(x, attend(q, k, v, causal)), (k, v)

    def step(self, x: jax.Array, position: jax.Array, keys: jax.Array, values: jax.Array):
        """One new token x [B, 1, d] at `position` (scalar int) against this layer's cache
        keys/values [B, H, T_max, d/H]: (x', keys', values') with the new entry written."""
        q, k, v = self.heads(x, position[None])
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k, position, axis=2)
        values = jax.lax.dynamic_update_slice_in_dim(values, v, position, axis=2)
        allowed = (jnp.arange(keys.shape[2]) <= position)[None, :]
        return self.finish(x, attend(q, keys, values, allowed)), keys, values


class Transformer(nn.Module):
    """Causal transformer LM: `__call__(tokens) -> (logits, scalar)`, `prefill`, `decode`."""

    vocab_size: int
    max_len: int  # longest sequence (prompt + completion); learned positions and the cache size
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_mult: int = 4
    positions: str = "learned"

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02))
        if self.positions == "learned":
            self.position_embed = nn.Embed(self.max_len, self.d_model, embedding_init=nn.initializers.normal(0.02))
        rot = self.positions == "rotary"
        self.blocks = [Block(self.d_model, self.num_heads, self.mlp_mult, rot) for _ in range(self.num_layers)]
        self.norm_out = nn.LayerNorm(name="norm_out")
        self.lm_head = nn.Dense(self.vocab_size, name="lm_head")
        self.scalar_head = nn.Dense(1, kernel_init=nn.initializers.zeros, name="scalar_head")

    def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        return x + self.position_embed(positions)[None] if self.positions == "learned" else x

    def _heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.norm_out(x)
        return self.lm_head(x), self.scalar_head(x)[..., 0]

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Teacher-forced pass: tokens [B, T] -> (logits [B, T, V], scalar [B, T])."""
        return self.prefill(tokens)[0]

    def prefill(self, tokens: jax.Array):
        """Whole-prefix pass that also returns the cache: ((logits, scalar), KVCache with positions
        0..T−1 filled, T_max = max_len)."""
        positions = jnp.arange(tokens.shape[1])
        x = self._embed(tokens, positions)
        keys, values = [], []
        pad = [(0, 0), (0, 0), (0, self.max_len - tokens.shape[1]), (0, 0)]
        for block in self.blocks:
            x, (k, v) = block(x, positions)
            keys.append(jnp.pad(k, pad))
            values.append(jnp.pad(v, pad))
        return self._heads(x), KVCache(jnp.stack(keys), jnp.stack(values))

    def decode(self, token: jax.Array, position: jax.Array, cache: KVCache):
        """One token [B] at `position` (scalar int, the same for the batch): ((logits [B, V],
        scalar [B]), cache with that position written)."""
        position = jnp.asarray(position, jnp.int32)
        x = self._embed(token[:, None], position[None])
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, position, cache.keys[i], cache.values[i])
            keys.append(k)
            values.append(v)
        logits, scalar = self._heads(x)
        return (logits[:, 0], scalar[:, 0]), KVCache(jnp.stack(keys), jnp.stack(values))
