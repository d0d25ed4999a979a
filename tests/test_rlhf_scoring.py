"""Scoring the sampled batch in chunks (`--score-batch`): the same per-token scores as one pass,
and the [B, T, V] logits of a large vocabulary no longer held for the whole batch at once."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import memory
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.decoder import DecoderConfig, decoder_lm
from ppo_jax.rlhf.rollout import Frozen, RLParams, collect
from ppo_jax.rlhf.setup import RLSetup, make_setup


class WideTask(NamedTuple):
    """Random prompts over a 4096-token vocabulary; reward: the fraction of completion tokens below 100."""

    vocab_size: int = 4096
    eos_id: int = 0
    prompt_len: int = 4
    completion_len: int = 8
    needs_reward_model: bool = False

    def prompts(self, key, num, held_out=False):
        return jax.random.randint(key, (num, self.prompt_len), 1, self.vocab_size)

    def reward(self, prompts, completions):
        return jnp.mean((completions < 100).astype(jnp.float32), axis=1)


def _rollouts(setup_for, params, frozen, prompts, key, score_batches):
    """The rollout of `collect` for each score_batch, and its compiled program's temporary bytes."""
    out = {}
    for n in score_batches:
        setup = setup_for(n)
        program = jax.jit(collect, static_argnums=0).lower(
            setup, setup.config.rl_hyperparams(), params, frozen, prompts, key
        )
        compiled = program.compile()
        out[n] = (compiled(setup.config.rl_hyperparams(), params, frozen, prompts, key), compiled)
    return out


@pytest.mark.parametrize("score_batch", [3, 4])  # 3: a last chunk of 2 rows (8 = 3 + 3 + 2)
def test_scores_in_chunks_equal_one_pass(score_batch):
    """PPO on the shipped transformer (policy, reference and critic all scored): every per-token
    quantity of the rollout equals the one-pass rollout's."""
    base = RLHFConfig(algo="ppo", d_model=32, rl_batch=8, group_size=4)
    setup = make_setup(base)
    keys = jax.random.split(jax.random.key(0), 4)
    policy, reference = setup.policy.init(keys[0]), setup.policy.init(keys[1])  # KL ≠ 0
    critic = jax.tree.map(lambda x: x + 0.05, setup.critic.init(keys[2]))  # its value head starts at 0
    params, frozen = RLParams(policy, critic), Frozen(reference, None, 0.0, 1.0)
    prompts = setup.task.prompts(keys[3], 8)
    runs = _rollouts(
        lambda n: make_setup(dataclasses.replace(base, score_batch=n)),
        params,
        frozen,
        prompts,
        jax.random.key(5),
        [0, score_batch],
    )
    one, chunked = runs[0][0], runs[score_batch][0]
    np.testing.assert_array_equal(one.completions, chunked.completions)
    assert float(jnp.max(jnp.abs(one.kl))) > 1e-3 and float(jnp.max(jnp.abs(one.values))) > 0  # things to compare
    for name in ("log_prob", "ref_log_prob", "entropy", "values", "kl", "reward"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(one, name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_scoring_in_chunks_holds_the_logits_of_one_chunk():
    """GRPO with a 4096-token decoder: XLA's temporaries of the rollout shrink by about the logits
    of the rows not scored at once, as `memory.sampling_bytes` counts them."""
    task = WideTask()
    decoder = DecoderConfig(
        vocab_size=task.vocab_size, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
        num_kv_heads=1, head_dim=8, max_len=task.prompt_len + task.completion_len, tie_embeddings=True,
    )  # fmt: skip
    lm = decoder_lm(decoder)
    batch = 32

    def setup_for(n):
        config = RLHFConfig(rl_batch=batch, group_size=4, score_batch=n)
        return RLSetup(config, task, lm, None, None)

    params = lm.init(jax.random.key(0))
    frozen = Frozen(lm.init(jax.random.key(1)), None, 0.0, 1.0)
    prompts = task.prompts(jax.random.key(2), batch)
    runs = _rollouts(setup_for, RLParams(params, None), frozen, prompts, jax.random.key(3), [0, 4])
    np.testing.assert_allclose(runs[4][0].kl, runs[0][0].kl, rtol=1e-5, atol=1e-6)
    temp = {n: compiled.memory_analysis().temp_size_in_bytes for n, (_, compiled) in runs.items()}
    tokens = task.prompt_len + task.completion_len - 1
    one_logits = batch * task.completion_len * task.vocab_size * 4  # one float32 [B, L, V]
    assert temp[0] - temp[4] > 2 * one_logits * (batch - 4) / batch  # at least the two models' logits
    estimated = memory.sampling_bytes(decoder, batch, tokens) - memory.sampling_bytes(decoder, batch, tokens, 4)
    assert estimated == memory._SCORE_COPIES * (batch - 4) * tokens * task.vocab_size * 4


def test_score_batch_is_checked_before_anything_compiles():
    with pytest.raises(ConfigError, match="score_batch"):
        RLHFConfig(score_batch=-1)
