"""The token task: vocabulary, the hidden scoring rule, the generated corpus and preference pairs.

Tokens 0..V−1 are shown as the letters a, b, c, ...; the successor of token v is (v + 1) mod V
(so after the last letter comes `a` again). A sequence is a prompt of P uniformly random tokens
followed by a completion of L tokens.

Hidden rule (the "true reward", never seen by the policy or the reward model): the fraction of
completion tokens that continue the alphabet from the token before them,

    R(x, y) = (1/L) Σ_{i=0}^{L−1} [y_i = (y_{i−1} + 1) mod V],   y_{−1} = x_{P−1},

so R ∈ [0, 1] and R = 1 for a completion that counts up from the last prompt letter.

Corpus: each completion token continues the run with probability p (`corpus_run_prob`), and is
otherwise drawn from a fixed random bigram chain over the previous token. A model pretrained on it
follows the chain and counts up only now and then: R is low but not zero, room for RL to improve.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Corpus(NamedTuple):
    """The generating process of the corpus: bigram logits [V, V] and the run probability."""

    bigram_logits: jax.Array  # logits of the next token given the previous one, row = previous
    run_prob: jax.Array  # scalar or [B]: probability of continuing the run instead


class PreferencePairs(NamedTuple):
    """Two completions of the same prompt and which one the hidden rule prefers."""

    prompts: jax.Array  # [N, P] int32
    first: jax.Array  # [N, L] int32
    second: jax.Array  # [N, L] int32
    label: jax.Array  # [N] float32: 1 first preferred, 0 second preferred, 0.5 tie


def successor(tokens: jax.Array, vocab_size: int) -> jax.Array:
    """(v + 1) mod V, elementwise."""
    return (tokens + 1) % vocab_size


def true_reward(prompts: jax.Array, completions: jax.Array, vocab_size: int) -> jax.Array:
    """Hidden rule R(x, y): fraction of completion tokens equal to the successor of the token before.

    prompts [B, P], completions [B, L] int -> [B] float32 in [0, 1].
    """
    previous = jnp.concatenate([prompts[:, -1:], completions[:, :-1]], axis=1)
    hits = completions == successor(previous, vocab_size)
    return jnp.mean(hits.astype(jnp.float32), axis=1)


def make_corpus(key: jax.Array, vocab_size: int, run_prob: float, temperature: float) -> Corpus:
    """A random bigram chain (standard normal logits × temperature) and the run probability."""
    logits = temperature * jax.random.normal(key, (vocab_size, vocab_size))
    return Corpus(logits, jnp.float32(run_prob))


def sample_prompts(key: jax.Array, num: int, prompt_len: int, vocab_size: int) -> jax.Array:
    """Uniformly random prompts [num, P] int32."""
    return jax.random.randint(key, (num, prompt_len), 0, vocab_size, dtype=jnp.int32)


def generate_completions(key: jax.Array, corpus: Corpus, prompts: jax.Array, length: int) -> jax.Array:
    """Completions [B, L] of the corpus process: y_i = successor(y_{i−1}) with probability p, else
    y_i ~ softmax(bigram_logits[y_{i−1}]). `corpus.run_prob` may be a scalar or per-sequence [B]."""
    vocab_size = corpus.bigram_logits.shape[0]
    run_prob = jnp.broadcast_to(corpus.run_prob, prompts.shape[:1])

    def step(previous, step_key):
        key_run, key_chain = jax.random.split(step_key)
        runs = jax.random.uniform(key_run, previous.shape) < run_prob
        chain = jax.random.categorical(key_chain, corpus.bigram_logits[previous]).astype(jnp.int32)
        token = jnp.where(runs, successor(previous, vocab_size), chain)
        return token, token

    _, tokens = lax.scan(step, prompts[:, -1], jax.random.split(key, length))
    return tokens.T


def preference_pairs(key: jax.Array, corpus: Corpus, num: int, prompt_len: int, completion_len: int):
    """`num` labelled comparisons: two corpus completions per prompt, each with its own run
    probability drawn from U(0, 1) so that the pairs span the whole reward range, labelled by the
    hidden rule (1 if the first has the higher R, 0 if the second, 0.5 for a tie)."""
    vocab_size = corpus.bigram_logits.shape[0]
    key_prompt, key_p, key_a, key_b = jax.random.split(key, 4)
    prompts = sample_prompts(key_prompt, num, prompt_len, vocab_size)
    run_probs = jax.random.uniform(key_p, (2, num))
    first = generate_completions(key_a, corpus._replace(run_prob=run_probs[0]), prompts, completion_len)
    second = generate_completions(key_b, corpus._replace(run_prob=run_probs[1]), prompts, completion_len)
    r_first = true_reward(prompts, first, vocab_size)
    r_second = true_reward(prompts, second, vocab_size)
    label = jnp.where(r_first > r_second, 1.0, jnp.where(r_first < r_second, 0.0, 0.5))
    return PreferencePairs(prompts, first, second, label.astype(jnp.float32))


def decode(tokens) -> str:
    """Token ids -> letters, e.g. [2, 3, 4] -> 'cde'."""
    return "".join(LETTERS[int(t)] for t in tokens)
