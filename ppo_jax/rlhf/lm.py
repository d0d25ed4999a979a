"""A language model as a record of pure functions, the one interface the fine-tuner reads.

    LanguageModel(init, logits_fn, value_fn, sample_fn)

- `init(key) -> params`
- `logits_fn(params, tokens [B, T]) -> logits [B, T, V]`: causal; position t predicts token t + 1
- `value_fn(params, tokens [B, T]) -> [B, T]`: a scalar head at every position (the critic V(s) of
  PPO, or a reward model read at the last token); None for a model without one
- `sample_fn(params, prompts [B, P], key, length, eos_id) -> completions [B, L]`: autoregressive
  samples; each row stops at its first EOS and is padded with EOS after it

A user's own Flax LM plugs in by writing these functions (`recompute_sampler` builds `sample_fn`
from `logits_fn` alone, at O(T²) per sequence); the shipped models come with cached samplers:
`transformer_lm` (KV cache) and `gru_lm` (the recurrent state).

Sampling key schedule (shared by every sampler, so that they agree token for token): completion
token i is drawn with `jax.random.split(key, L)[i]` from softmax(logits of position P − 1 + i).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax.core.distributions import categorical_sample
from ppo_jax.rlhf.model import TokenModel, hidden_states
from ppo_jax.rlhf.transformer import Transformer


class LanguageModel(NamedTuple):
    """A causal LM as pure functions (see the module docstring for the signatures)."""

    init: Callable[[jax.Array], Any]
    logits_fn: Callable[[Any, jax.Array], jax.Array]
    value_fn: Callable[[Any, jax.Array], jax.Array] | None
    sample_fn: Callable[..., jax.Array]


def generate(logits: jax.Array, state: Any, advance: Callable, key: jax.Array, length: int, eos_id: int) -> jax.Array:
    """The sampling loop shared by every sampler, a `lax.while_loop` that ends when every row has
    emitted EOS or `length` tokens are drawn.

    logits [B, V]: the distribution of completion token 0; `advance(state, token [B], i) ->
    (logits [B, V] of token i + 1, state)` feeds token i to the model. Rows that have ended get
    EOS (the pad) and are still fed to the model (their later outputs are never read).
    Returns completions [B, L] int32.
    """
    keys = jax.random.split(key, length)
    batch = logits.shape[0]

    def body(carry):
        i, logits, state, tokens, done = carry
        token = jnp.where(done, eos_id, categorical_sample(keys[i], logits))
        tokens = lax.dynamic_update_slice_in_dim(tokens, token[:, None], i, axis=1)
        logits, state = advance(state, token, i)
        return i + 1, logits, state, tokens, jnp.logical_or(done, token == eos_id)

    def cond(carry):
        return jnp.logical_and(carry[0] < length, jnp.logical_not(jnp.all(carry[4])))

    tokens = jnp.full((batch, length), eos_id, jnp.int32)
    start = (jnp.int32(0), logits, state, tokens, jnp.zeros(batch, bool))
    return lax.while_loop(cond, body, start)[3]


def _recompute_advance(logits_fn, params, prompt_len, buffer, token, i):
    buffer = lax.dynamic_update_slice_in_dim(buffer, token[:, None], prompt_len + i, axis=1)
    logits = logits_fn(params, buffer)
    return lax.dynamic_index_in_dim(logits, prompt_len + i, axis=1, keepdims=False), buffer


def recompute_sample(logits_fn, params, prompts, key, length: int, eos_id: int) -> jax.Array:
    """Sampler for any `logits_fn`: every step re-runs the model over prompt + completion so far
    (padded to P + L; causality makes the padding invisible). O((P + L)²) attention per token."""
    prompt_len = prompts.shape[1]
    buffer = jnp.concatenate([prompts, jnp.full((prompts.shape[0], length), eos_id, prompts.dtype)], axis=1)
    first = logits_fn(params, buffer)[:, prompt_len - 1]
    advance = functools.partial(_recompute_advance, logits_fn, params, prompt_len)
    return generate(first, buffer, advance, key, length, eos_id)


def recompute_sampler(logits_fn: Callable) -> Callable[..., jax.Array]:
    """`sample_fn` for a model that only has `logits_fn` (no cache)."""
    return functools.partial(recompute_sample, logits_fn)


# --- the shipped transformer ---------------------------------------------------------------


def module_logits(module, params, tokens):
    """Logits [B, T, V] of a Flax LM whose `__call__` returns (logits, values)."""
    return module.apply(params, tokens)[0]


def module_values(module, params, tokens):
    """Value-head outputs [B, T] of a Flax LM whose `__call__` returns (logits, values)."""
    return module.apply(params, tokens)[1]


def _cached_advance(module, params, prompt_len, cache, token, i):
    (logits, _), cache = module.apply(params, token, prompt_len + i, cache, method=type(module).decode)
    return logits, cache


def cached_sample(module, params, prompts, key, length: int, eos_id: int) -> jax.Array:
    """KV-cached sampler for a Flax LM with `prefill(prompts)` and `decode(token, position, cache)`
    (the shipped transformer, the Hugging Face decoder): one `prefill` over the prompts [B, P],
    then one `decode` per token (the key schedule of `generate`)."""
    (logits, _), cache = module.apply(params, prompts, method=type(module).prefill)
    advance = functools.partial(_cached_advance, module, params, prompts.shape[1])
    return generate(logits[:, -1], cache, advance, key, length, eos_id)


def _init(module, example_len: int, key):
    return module.init(key, jnp.zeros((1, example_len), jnp.int32))


def transformer_lm(module: Transformer) -> LanguageModel:
    """The record of a `Transformer` module (sampling through its KV cache)."""
    return LanguageModel(
        init=functools.partial(_init, module, module.max_len),
        logits_fn=functools.partial(module_logits, module),
        value_fn=functools.partial(module_values, module),
        sample_fn=functools.partial(cached_sample, module),
    )


# --- the GRU -------------------------------------------------------------------------------


def _gru_outputs(module: TokenModel, params, tokens):
    return module.apply(params, hidden_states(module, params, tokens), method=TokenModel.heads)


def _gru_logits(module, params, tokens):
    return _gru_outputs(module, params, tokens)[0]


def _gru_values(module, params, tokens):
    return _gru_outputs(module, params, tokens)[1]


def _gru_advance(module: TokenModel, params, hidden, token, i):
    gates = module.apply(params, token, method=TokenModel.gates)
    hidden = module.apply(params, hidden, gates, method=TokenModel.recur)
    return module.apply(params, hidden, method=TokenModel.heads)[0], hidden


def gru_sample(module: TokenModel, params, prompts, key, length: int, eos_id: int) -> jax.Array:
    """Sampler carrying the GRU state: O(1) per token."""
    last = hidden_states(module, params, prompts)[:, -1]
    logits = module.apply(params, last, method=TokenModel.heads)[0]
    return generate(logits, last, functools.partial(_gru_advance, module, params), key, length, eos_id)


def _gru_init(module: TokenModel, key):
    return module.init(key, jnp.zeros((1,), jnp.int32))


def gru_lm(module: TokenModel) -> LanguageModel:
    """The record of the GRU `TokenModel`."""
    return LanguageModel(
        init=functools.partial(_gru_init, module),
        logits_fn=functools.partial(_gru_logits, module),
        value_fn=functools.partial(_gru_values, module),
        sample_fn=functools.partial(gru_sample, module),
    )
