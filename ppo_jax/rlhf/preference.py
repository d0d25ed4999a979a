"""The preference task on tokens: letters, a hidden rule, a learned Bradley–Terry reward model.

The letters 0..V−1 and the corpus process are those of `ppo_jax.rlhf.task`; token V is EOS (shown
as `.`). A corpus completion ends at each position after the first with probability
`eos_prob` (EOS, then EOS padding), or runs to the maximum length L without one.

Hidden rule, generalised to ragged completions (only the content tokens, before EOS, count):

    R(x, y) = (1/L) Σ_{i < n} [y_i = (y_{i−1} + 1) mod V],   y_{−1} = x_{P−1},   n = content length

so R ∈ [0, 1]: counting up from the last prompt letter scores, and a longer count scores more.
The policy never sees R: it is rewarded by a reward model fitted to pairs that R labels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ppo_jax.rlhf.task import LETTERS, PreferencePairs, generate_completions, make_corpus, successor


def end_at_eos(key: jax.Array, completions: jax.Array, eos_id: int, eos_prob) -> jax.Array:
    """Cut each row at a random position: from the first t ≥ 1 with u_t < eos_prob on, tokens are EOS.
    completions [B, L] -> [B, L]. `eos_prob` may be a scalar or [B]."""
    b, length = completions.shape
    stop = jax.random.uniform(key, (b, length)) < jnp.reshape(jnp.asarray(eos_prob), (-1, 1))
    stop = stop.at[:, 0].set(False)
    ended = jnp.cumsum(stop, axis=1) > 0
    return jnp.where(ended, eos_id, completions).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class PreferenceTask:
    """Letters with a hidden counting rule; hashable, so it can be a static jit argument."""

    letters: int = 12
    prompt_len: int = 4
    completion_len: int = 8
    run_prob: float = 0.1
    temperature: float = 1.0
    eos_prob: float = 0.1
    seed: int = 0  # the corpus bigram chain is drawn from this seed

    needs_reward_model = True
    name = "preference"

    @property
    def vocab_size(self) -> int:
        return self.letters + 1

    @property
    def eos_id(self) -> int:
        return self.letters

    def _corpus(self):
        return make_corpus(jax.random.key(self.seed), self.letters, self.run_prob, self.temperature)

    def prompts(self, key: jax.Array, num: int, held_out: bool = False) -> jax.Array:
        """Uniformly random letter prompts [num, P] (every prompt is new, so none is held out)."""
        return jax.random.randint(key, (num, self.prompt_len), 0, self.letters, dtype=jnp.int32)

    def reward(self, prompts: jax.Array, completions: jax.Array) -> jax.Array:
        """Hidden rule R [B] of the module docstring; completions [B, L] with EOS after the first EOS."""
        previous = jnp.concatenate([prompts[:, -1:], completions[:, :-1]], axis=1)
        content = jnp.cumsum(completions == self.eos_id, axis=1) == 0
        hits = jnp.logical_and(content, completions == successor(previous, self.letters))
        return jnp.sum(hits, axis=1).astype(jnp.float32) / self.completion_len

    def _complete(self, key: jax.Array, prompts: jax.Array, run_prob) -> jax.Array:
        key_text, key_end = jax.random.split(key)
        corpus = self._corpus()._replace(run_prob=run_prob)
        text = generate_completions(key_text, corpus, prompts, self.completion_len)
        return end_at_eos(key_end, text, self.eos_id, self.eos_prob)

    def corpus(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """Pretraining examples (prompts [num, P], completions [num, L]) of the corpus process."""
        key_prompt, key_text = jax.random.split(key)
        prompts = self.prompts(key_prompt, num)
        return prompts, self._complete(key_text, prompts, jnp.float32(self.run_prob))

    def preference_pairs(self, key: jax.Array, num: int) -> PreferencePairs:
        """Two corpus completions per prompt, each with its own run probability ~ U(0, 1) so that
        the pairs span the reward range, labelled by R (1 first better, 0 second, 0.5 tie)."""
        key_prompt, key_p, key_a, key_b = jax.random.split(key, 4)
        prompts = self.prompts(key_prompt, num)
        run_probs = jax.random.uniform(key_p, (2, num))
        first = self._complete(key_a, prompts, run_probs[0])
        second = self._complete(key_b, prompts, run_probs[1])
        r_first, r_second = self.reward(prompts, first), self.reward(prompts, second)
        label = jnp.where(r_first > r_second, 1.0, jnp.where(r_first < r_second, 0.0, 0.5))
        return PreferencePairs(prompts, first, second, label.astype(jnp.float32))

    def decode(self, tokens) -> str:
        """Tokens -> letters, EOS as `.`; completions stop after the first EOS."""
        text = "".join("." if int(t) == self.eos_id else LETTERS[int(t)] for t in tokens)
        return text[: text.index(".") + 1] if "." in text else text
