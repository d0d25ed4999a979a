"""A tiny autoregressive GRU language model with a policy head and a scalar head (the module and its
scan; `lm.gru_lm` makes it a `LanguageModel`, the interface the pipeline reads).

One module serves every role of the RLHF pipeline: the pretrained policy, the frozen reference
(a copy of its parameters), the actor-critic of PPO (the scalar head is the value V(s_t)) and the
reward model (the scalar head read after the last token, initialised from the pretrained policy
as in Ouyang et al. 2022).

Index convention: after reading token t the hidden state h_t gives the logits of token t + 1 and
the scalar head's value. For a prompt x of P tokens and a completion y of L tokens the state
s_i = (x, y_{<i}) is h after token P − 1 + i, and π(y_i | s_i), V(s_i) are read there.

The GRU is written out (one gather for all input gates, one matmul for the hidden gates) so that
the recurrent scan body is only a few ops; the heads run once over all positions after the scan.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ppo_jax import fast_paths


class TokenModel(nn.Module):
    """GRU LM: `gates(tokens)`, `recur(h, gates_t)`, `heads(h) -> (logits, scalar)`."""

    vocab_size: int
    hidden_dim: int

    def setup(self):
        # Embedding straight to the 3 input gates: equal to an embedding followed by a linear layer.
        self.input_gates = nn.Embed(self.vocab_size, 3 * self.hidden_dim, name="input_gates")
        self.hidden_gates = nn.Dense(3 * self.hidden_dim, kernel_init=fast_paths.orthogonal(), name="hidden_gates")
        self.policy_head = nn.Dense(self.vocab_size, name="policy_head")
        self.scalar_head = nn.Dense(1, kernel_init=nn.initializers.zeros, name="scalar_head")

    def gates(self, tokens: jax.Array) -> jax.Array:
        """Input-gate pre-activations [..., 3H] of tokens [...]."""
        return self.input_gates(tokens)

    def recur(self, hidden: jax.Array, gates: jax.Array) -> jax.Array:
        """GRU step (Cho et al. 2014): r, z = σ(x_r + W_r h), σ(x_z + W_z h);
        n = tanh(x_n + r ⊙ (W_n h + b_n)); h' = (1 − z) ⊙ n + z ⊙ h. [B, H], [B, 3H] -> [B, H]."""
        x_r, x_z, x_n = jnp.split(gates, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.hidden_gates(hidden), 3, axis=-1)
        reset = jax.nn.sigmoid(x_r + h_r)
        update = jax.nn.sigmoid(x_z + h_z)
        candidate = jnp.tanh(x_n + reset * h_n)
        return (1.0 - update) * candidate + update * hidden

    def heads(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(next-token logits [..., V], scalar [...]) from hidden states [..., H]."""
        return self.policy_head(hidden), self.scalar_head(hidden)[..., 0]

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Initialisation path touching every parameter: heads of one step over tokens [B]."""
        hidden = self.recur(jnp.zeros((*tokens.shape, self.hidden_dim)), self.gates(tokens))
        return self.heads(hidden)


def hidden_states(model: TokenModel, params: Any, tokens: jax.Array) -> jax.Array:
    """h_t after reading tokens[:, :t+1], from h_{−1} = 0: tokens [B, T] -> [B, T, H]."""
    gates = model.apply(params, tokens, method=TokenModel.gates)

    def step(hidden, gates_t):
        hidden = model.apply(params, hidden, gates_t, method=TokenModel.recur)
        return hidden, hidden

    start = jnp.zeros((tokens.shape[0], model.hidden_dim), gates.dtype)
    _, hs = lax.scan(step, start, jnp.swapaxes(gates, 0, 1))
    return jnp.swapaxes(hs, 0, 1)
