"""The Llama / Qwen2 / Mistral decoder family in Flax, with a KV cache, as a `LanguageModel`.

Per layer (pre-norm; Touvron et al. 2023, "LLaMA"):

    h ← h + W_o Attn(RoPE(W_q n + b_q), RoPE(W_k n + b_k), W_v n + b_v),   n = RMSNorm(h)
    h ← h + W_down (SiLU(W_gate n) ⊙ W_up n),                              n = RMSNorm(h)
    logits = W_out RMSNorm(h)   (W_out = the token embedding when tied)

RMSNorm(x) = w ⊙ x / √(mean(x²) + ε) computed in float32 (Zhang & Sennrich 2019). Attention is
grouped-query (Ainslie et al. 2023): H query heads share H_kv key/value heads, head h reading
key/value head ⌊h / (H/H_kv)⌋; softmax(q·k/√D) in float32, causal, and for Mistral limited to the
last `sliding_window` positions (query i sees keys j with i − window < j ≤ i).

The members differ only in flags of `DecoderConfig`: Qwen2 has q/k/v biases, Llama 3.1 a
`rope_scaling`, Mistral a sliding window, small models tie the embeddings. Weights are float32
or bfloat16 (`dtype`); norms, softmax and the returned logits are float32.

Left padding: with `pad_id` set, the leading tokens of a row equal to it are padding; keys there
are masked and positions count from the first real token (as a Hugging Face model given the
attention mask and position ids), so prompts of different lengths share one batch. The scalar
head (`value_head`, zero-initialised) is not part of a checkpoint; it gives PPO's critic.

Rematerialisation (`remat=True`): each layer is wrapped in `nn.remat` (`jax.checkpoint`), so a
backward pass keeps only every layer's input [B, T, d] and recomputes the layer's internals
(q, k, v, scores [B, H, T, T], the MLP's [B, T, I]) when its gradient is needed: activation
memory falls from about L · (layer internals) to L · B·T·d + one layer's internals, for about
one more forward pass of compute. Values and gradients are unchanged (tested to 1e-5).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import rope
from ppo_jax.rlhf.lm import LanguageModel, cached_sample, module_logits, module_values

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class DecoderConfig(NamedTuple):
    """Shape and flags of one decoder (hashable: it is static in every jitted program)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_len: int  # KV-cache length: the longest prompt + completion sampled
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # the checkpoint's dict as sorted items
    qkv_bias: bool = False  # Qwen2
    o_bias: bool = False  # Llama's `attention_bias` sets both
    mlp_bias: bool = False
    tie_embeddings: bool = False
    sliding_window: int | None = None  # Mistral
    dtype: str = "float32"
    pad_id: int | None = None  # leading tokens equal to it are left padding
    lora_scale: float = 1.0  # α / r of the adapters, when the variables hold them (`rlhf.lora`)
    remat: bool = False  # recompute each layer's activations in the backward pass (`jax.checkpoint`)

    @property
    def param_dtype(self):
        return DTYPES[self.dtype]


def check_config(config: DecoderConfig) -> None:
    """Raise `ConfigError` naming the first inconsistent field (before anything compiles)."""
    if config.dtype not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    if config.num_heads % config.num_kv_heads:
        raise ConfigError("num_key_value_heads", f"{config.num_kv_heads} does not divide {config.num_heads} heads")
    if config.head_dim % 2:
        raise ConfigError("head_dim", f"must be even for rotary positions, got {config.head_dim}")
    rope.check_scaling(None if config.rope_scaling is None else dict(config.rope_scaling))


class RMSNorm(nn.Module):
    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """w ⊙ x / √(mean(x²) + ε) over the last axis, the statistic in float32."""
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return weight[(None,) * (x.ndim - 1)] * normed.astype(x.dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """Grouped-query attention: q [B, H, T_q, D], k and v [B, H_kv, T_k, D], allowed [B, T_q, T_k]
    -> [B, H, T_q, D]. Query head h uses key/value head ⌊h / G⌋, G = H / H_kv; scores and softmax
    in float32."""
    b, h, t, d = q.shape
    groups = h // k.shape[1]
    q = q.reshape(b, k.shape[1], groups, t, d)
    scores = jnp.einsum("bkgqd,bksd->bkgqs", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgqs,bksd->bkgqd", weights, v).reshape(b, h, t, d)


class Dense(nn.Module):
    """y = x W + b, plus a low-rank adapter s (x A) B when the variables hold a `lora` collection
    with this layer's `a` [in, r] and `b` [r, out] (Hu et al. 2021; `rlhf.lora`). Without the
    collection the layer is the base weights alone, so the same `params` serve both."""

    features: int
    use_bias: bool
    dtype: Any
    lora_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        kernel = self.param("kernel", init, (x.shape[-1], self.features), self.dtype)
        y = jnp.einsum("...i,io->...o", x, kernel)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.dtype)
            y = y + bias[(None,) * (y.ndim - 1)]
        if self.has_variable("lora", "a"):
            a, b = self.get_variable("lora", "a"), self.get_variable("lora", "b")
            low = jnp.einsum("...i,ir->...r", x, a.astype(x.dtype))
            y = y + (self.lora_scale * jnp.einsum("...r,ro->...o", low, b.astype(x.dtype))).astype(y.dtype)
        return y


def _dense(features: int, bias: bool, dtype, name: str, scale: float = 1.0) -> Dense:
    return Dense(features, bias, dtype, scale, name=name)


class Attention(nn.Module):
    config: DecoderConfig

    def setup(self):
        c, dt = self.config, self.config.param_dtype
        self.q_proj = _dense(c.num_heads * c.head_dim, c.qkv_bias, dt, "q_proj", c.lora_scale)
        self.k_proj = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, dt, "k_proj", c.lora_scale)
        self.v_proj = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, dt, "v_proj", c.lora_scale)
        self.o_proj = _dense(c.hidden_size, c.o_bias, dt, "o_proj", c.lora_scale)

    def heads(self, x: jax.Array, positions: jax.Array, freq: jax.Array):
        """q [B, H, T, D], k and v [B, H_kv, T, D] of x [B, T, d], rotary at positions [B, T]."""
        b, t, _ = x.shape
        c = self.config

        def split(y, n):
            return jnp.swapaxes(y.reshape(b, t, n, c.head_dim), 1, 2)

        q = rope.rotate(split(self.q_proj(x), c.num_heads), positions, freq)
        k = rope.rotate(split(self.k_proj(x), c.num_kv_heads), positions, freq)
        return q, k, split(self.v_proj(x), c.num_kv_heads)

    def out(self, attended: jax.Array) -> jax.Array:
        b, _, t, _ = attended.shape
        return self.o_proj(jnp.swapaxes(attended, 1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """SwiGLU (Shazeer 2020): W_down (SiLU(W_gate x) ⊙ W_up x)."""
        c, dt = self.config, self.config.param_dtype
        gate = _dense(c.intermediate_size, c.mlp_bias, dt, "gate_proj", c.lora_scale)(x)
        up = _dense(c.intermediate_size, c.mlp_bias, dt, "up_proj", c.lora_scale)(x)
        return _dense(c.hidden_size, c.mlp_bias, dt, "down_proj", c.lora_scale)(nn.silu(gate) * up)


class Layer(nn.Module):
    config: DecoderConfig

    def setup(self):
        c = self.config
        self.input_layernorm = RMSNorm(c.rms_norm_eps, c.param_dtype)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.rms_norm_eps, c.param_dtype)
        self.mlp = MLP(c)

    def __call__(self, x, positions, freq, allowed, cache=None, index=None):
        """x [B, T, d] -> (x', (k, v)). With `cache` (keys, values [B, H_kv, T_max, D]) the new
        keys/values are written at `index` and attention reads the whole cache."""
        q, k, v = self.self_attn.heads(self.input_layernorm(x), positions, freq)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k, index, axis=2)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v, index, axis=2)
        x = x + self.self_attn.out(attend(q, k, v, allowed))
        return x + self.mlp(self.post_attention_layernorm(x)), (k, v)


class DecoderCache(NamedTuple):
    """Sampling state: keys/values [layers, B, H_kv, T_max, D], which cache slots hold real tokens
    [B, T_max] bool, and each row's left padding [B] (position = slot − offset)."""

    keys: jax.Array
    values: jax.Array
    valid: jax.Array
    offset: jax.Array


def allowed_mask(config: DecoderConfig, query_slots: jax.Array, valid: jax.Array) -> jax.Array:
    """[B, T_q, T_k]: key slot j is real, j ≤ i and (with a window) i − j < window, for query slot i."""
    keys = jnp.arange(valid.shape[1])
    allowed = keys[None, :] <= query_slots[:, None]
    if config.sliding_window is not None:
        allowed = allowed & (query_slots[:, None] - keys[None, :] < config.sliding_window)
    return allowed[None] & valid[:, None, :]


def padding(config: DecoderConfig, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(real [B, T] bool, offset [B]): leading `pad_id` tokens are not real (none without pad_id)."""
    if config.pad_id is None:
        return jnp.ones(tokens.shape, bool), jnp.zeros(tokens.shape[:1], jnp.int32)
    leading = jnp.cumprod((tokens == config.pad_id).astype(jnp.int32), axis=1)
    return leading == 0, jnp.sum(leading, axis=1)


class Decoder(nn.Module):
    """`__call__(tokens) -> (logits, scalar)`, `prefill(tokens)`, `decode(token, slot, cache)`."""

    config: DecoderConfig

    def setup(self):
        c = self.config
        init = nn.initializers.normal(0.02)
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, param_dtype=c.param_dtype, embedding_init=init)
        layer = nn.remat(Layer) if c.remat else Layer  # same parameter names either way
        self.layers = [layer(c, name=f"layers_{i}") for i in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps, c.param_dtype)
        if not c.tie_embeddings:
            self.lm_head = _dense(c.vocab_size, False, c.param_dtype, "lm_head")
        self.value_head = nn.Dense(1, kernel_init=nn.initializers.zeros, name="value_head")
        scaling = None if c.rope_scaling is None else dict(c.rope_scaling)
        self.freq = jnp.asarray(rope.frequencies(c.rope_theta, c.head_dim, scaling))

    def _heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.norm(x)
        logits = self.embed_tokens.attend(x) if self.config.tie_embeddings else self.lm_head(x)
        return logits.astype(jnp.float32), self.value_head(x.astype(jnp.float32))[..., 0]

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Teacher-forced pass: tokens [B, T] -> (logits [B, T, V] float32, scalar [B, T])."""
        return self._run(tokens, cache_len=None)[0]

    def prefill(self, tokens: jax.Array):
        """Whole-prompt pass: ((logits, scalar), DecoderCache with slots 0..T−1 filled)."""
        return self._run(tokens, cache_len=self.config.max_len)

    def _run(self, tokens: jax.Array, cache_len: int | None):
        c = self.config
        real, offset = padding(c, tokens)
        slots = jnp.arange(tokens.shape[1])
        positions = jnp.maximum(slots[None, :] - offset[:, None], 0)
        allowed = allowed_mask(c, slots, real)
        x = self.embed_tokens(tokens).astype(c.param_dtype)
        keys, values = [], []
        for layer in self.layers:
            x, (k, v) = layer(x, positions, self.freq, allowed)
            keys.append(k)
            values.append(v)
        if cache_len is None:
            return self._heads(x), None
        pad = [(0, 0), (0, 0), (0, cache_len - tokens.shape[1]), (0, 0)]
        valid = jnp.pad(real, [(0, 0), (0, cache_len - tokens.shape[1])])
        stacked = [jnp.stack([jnp.pad(a, pad) for a in arrays]) for arrays in (keys, values)]
        return self._heads(x), DecoderCache(*stacked, valid, offset)

    def decode(self, token: jax.Array, slot: jax.Array, cache: DecoderCache):
        """One token [B] written at cache slot `slot` (scalar int): ((logits [B, V], scalar [B]), cache')."""
        slot = jnp.asarray(slot, jnp.int32)
        valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, jnp.ones((token.shape[0], 1), bool), slot, axis=1)
        positions = (slot - cache.offset)[:, None]
        allowed = allowed_mask(self.config, slot[None], valid)
        x = self.embed_tokens(token[:, None]).astype(self.config.param_dtype)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, (k, v) = layer(x, positions, self.freq, allowed, (cache.keys[i], cache.values[i]), slot)
            keys.append(k)
            values.append(v)
        logits, scalar = self._heads(x)
        return (logits[:, 0], scalar[:, 0]), DecoderCache(jnp.stack(keys), jnp.stack(values), valid, cache.offset)


# --- as a LanguageModel --------------------------------------------------------------------


def _init(module: Decoder, key):
    return module.init(key, jnp.zeros((1, 2), jnp.int32))


def decoder_lm(config: DecoderConfig) -> LanguageModel:
    """The `LanguageModel` record of a decoder (validated with `check_config`)."""
    check_config(config)
    module = Decoder(config)
    return LanguageModel(
        init=functools.partial(_init, module),
        logits_fn=functools.partial(module_logits, module),
        value_fn=functools.partial(module_values, module),
        sample_fn=functools.partial(cached_sample, module),
    )
