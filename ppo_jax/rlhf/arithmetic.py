"""The arithmetic task: `a+b=` prompts, digit answers ending in EOS, a verifiable exact-match reward.

Tokens: 0..9 are the digits, 10 is `+`, 11 is `=`, 12 is EOS (shown as `.`). Operands have exactly
`digits` digits (no leading zeros), so every prompt has 2·digits + 2 tokens, e.g. `37+58=`; the
answer has digits or digits + 1 digits, then EOS (`95.`). Completions have room for
`digits + 3` tokens: one more than the longest correct answer, so a model can be wrong by a digit
too many, or run past the end without EOS (truncated).

Reward (verifiable, no reward model): R(x, y) = 1 if y up to and including its first EOS spells
exactly a + b (most significant digit first, no leading zero), else 0.

Pairs (a, b) are split once, by a fixed hash, into a training split (80 %) and a held-out split
(20 %) that neither pretraining nor RL ever sees: accuracy is measured there.

Pretraining corpus (imperfect on purpose): the answer is right with probability
`corpus_accuracy`; otherwise it is corrupted by one of three edits with equal probability: a
digit replaced by another, a digit deleted, or a random digit inserted. A model that imitates
the corpus is right about that often; RL then has to find the right answer among its samples.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

PLUS, EQUALS, EOS = 10, 11, 12
SYMBOLS = "0123456789+=."
HELD_OUT_PERCENT = 20


@functools.cache
def split_pairs(digits: int) -> tuple[np.ndarray, np.ndarray]:
    """(train pairs [N_train, 2], held-out pairs [N_held, 2]) of all `digits`-digit operand pairs,
    split by a fixed multiplicative hash of (a, b) (Knuth's 2654435761): the same on every run."""
    low, high = 10 ** (digits - 1), 10**digits
    a, b = np.meshgrid(np.arange(low, high), np.arange(low, high), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int64)
    code = (pairs[:, 0] * 100_003 + pairs[:, 1]) * 2654435761 % (1 << 32)
    held = (code >> 16) % 100 < HELD_OUT_PERCENT
    return pairs[~held].astype(np.int32), pairs[held].astype(np.int32)


def number_digits(n: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Digits of non-negative integers n [B], most significant first, left-aligned in `width`
    columns (later columns 0): (digits [B, width] int32, count [B] int32). 0 has one digit."""
    count = jnp.ones_like(n)
    for k in range(1, width):
        count = count + (n >= 10**k)
    place = count[:, None] - 1 - jnp.arange(width)[None, :]  # power of ten of each column
    digits = (n[:, None] // (10 ** jnp.maximum(place, 0))) % 10
    return jnp.where(place >= 0, digits, 0).astype(jnp.int32), count.astype(jnp.int32)


def terminate(digits: jax.Array, count: jax.Array, width: int) -> jax.Array:
    """Answer rows: the first `count` digits, then EOS, then EOS padding: [B, W'] -> [B, width]."""
    digits = jnp.pad(digits, [(0, 0), (0, max(0, width - digits.shape[1]))])[:, :width]
    return jnp.where(jnp.arange(width)[None, :] < count[:, None], digits, EOS).astype(jnp.int32)


def corrupt(key: jax.Array, digits: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One random edit per row (replace, delete or insert a digit at a uniform position):
    digits [B, W], count [B] -> (digits [B, W + 1], count [B]). A one-digit answer is never
    deleted to nothing (it is replaced instead)."""
    b, w = digits.shape
    k_kind, k_pos, k_digit = jax.random.split(key, 3)
    kind = jax.random.randint(k_kind, (b,), 0, 3)  # 0 replace, 1 delete, 2 insert
    kind = jnp.where(jnp.logical_and(kind == 1, count < 2), 0, kind)
    pos = jnp.floor(jax.random.uniform(k_pos, (b,)) * (count + (kind == 2))).astype(jnp.int32)
    shift = jax.random.randint(k_digit, (b,), 1, 10)
    padded = jnp.pad(digits, [(0, 0), (0, 1)])
    col = jnp.arange(w + 1)[None, :]
    src = jnp.where(kind[:, None] == 1, col + (col >= pos[:, None]), col - (col > pos[:, None]))
    src = jnp.where(kind[:, None] == 0, col, src)
    moved = jnp.take_along_axis(padded, jnp.clip(src, 0, w), axis=1)
    at = col == pos[:, None]
    replaced = (moved + shift[:, None]) % 10  # a different digit
    inserted = shift[:, None]  # any digit 1..9 (an inserted 0 would often read as a valid answer)
    out = jnp.where(at & (kind[:, None] == 0), replaced, jnp.where(at & (kind[:, None] == 2), inserted, moved))
    return out, count + jnp.where(kind == 1, -1, jnp.where(kind == 2, 1, 0))


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """`a+b=` with `digits`-digit operands; hashable, so it can be a static jit argument."""

    digits: int = 2
    corpus_accuracy: float = 0.3

    needs_reward_model = False
    name = "arithmetic"

    @property
    def vocab_size(self) -> int:
        return len(SYMBOLS)

    @property
    def eos_id(self) -> int:
        return EOS

    @property
    def prompt_len(self) -> int:
        return 2 * self.digits + 2

    @property
    def completion_len(self) -> int:
        return self.digits + 3

    def _pairs(self, key: jax.Array, num: int, held_out: bool) -> jax.Array:
        table = jnp.asarray(split_pairs(self.digits)[int(held_out)])
        return table[jax.random.randint(key, (num,), 0, table.shape[0])]

    def encode_prompts(self, pairs: jax.Array) -> jax.Array:
        """pairs [B, 2] -> prompt tokens [B, 2·digits + 2]: a, `+`, b, `=`."""
        a, _ = number_digits(pairs[:, 0], self.digits)
        b, _ = number_digits(pairs[:, 1], self.digits)
        ones = jnp.ones((pairs.shape[0], 1), jnp.int32)
        return jnp.concatenate([a, PLUS * ones, b, EQUALS * ones], axis=1)

    def decode_pairs(self, prompts: jax.Array) -> jax.Array:
        """prompt tokens [B, P] -> operands [B, 2]."""
        powers = (10 ** jnp.arange(self.digits - 1, -1, -1))[None, :]
        a = jnp.sum(prompts[:, : self.digits] * powers, axis=1)
        b = jnp.sum(prompts[:, self.digits + 1 : 2 * self.digits + 1] * powers, axis=1)
        return jnp.stack([a, b], axis=1)

    def prompts(self, key: jax.Array, num: int, held_out: bool = False) -> jax.Array:
        """`num` prompts [num, P] drawn uniformly (with replacement) from the training or held-out split."""
        return self.encode_prompts(self._pairs(key, num, held_out))

    def answers(self, prompts: jax.Array) -> jax.Array:
        """The correct completions [B, L]: the digits of a + b, EOS, EOS padding."""
        pairs = self.decode_pairs(prompts)
        digits, count = number_digits(pairs[:, 0] + pairs[:, 1], self.digits + 1)
        return terminate(digits, count, self.completion_len)

    def reward(self, prompts: jax.Array, completions: jax.Array) -> jax.Array:
        """Exact match R ∈ {0, 1} [B]. `completions` [B, L] must hold EOS after the first EOS
        (what every sampler returns), so a row-wise equality with `answers` is the exact match."""
        return jnp.all(completions == self.answers(prompts), axis=1).astype(jnp.float32)

    def corpus(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """Pretraining examples (prompts [num, P], completions [num, L]) from the training split,
        right with probability `corpus_accuracy`, otherwise corrupted by one edit."""
        k_pairs, k_right, k_edit = jax.random.split(key, 3)
        prompts = self.prompts(k_pairs, num)
        pairs = self.decode_pairs(prompts)
        digits, count = number_digits(pairs[:, 0] + pairs[:, 1], self.digits + 1)
        wrong_digits, wrong_count = corrupt(k_edit, digits, count)
        right = jax.random.uniform(k_right, (num,)) < self.corpus_accuracy
        digits = jnp.where(right[:, None], jnp.pad(digits, [(0, 0), (0, 1)]), wrong_digits)
        return prompts, terminate(digits, jnp.where(right, count, wrong_count), self.completion_len)

    def decode(self, tokens) -> str:
        """Tokens -> text, e.g. [3, 7, 10, 5, 8, 11] -> '37+58='; completions stop after the first EOS."""
        text = "".join(SYMBOLS[int(t)] for t in tokens)
        return text[: text.index(".") + 1] if "." in text else text
