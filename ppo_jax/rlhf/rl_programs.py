"""The programs after phase 1 (the evaluation and the RL chunks), compiled ahead on a thread
while phase 1 runs (`rlhf.ahead`).

Only for a run on one device (no `--shard-params` mesh: an executable lowered from shapes alone
has no placement) whose model is built from its config (not `hf:`, whose parameter shapes come
from files read later)."""

from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppo_jax.rlhf import ahead, hf_model
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.finetune import evaluate
from ppo_jax.rlhf.rl_run import RunOptions, chunk_schedule, init_states, run_chunk
from ppo_jax.rlhf.rollout import Frozen, RLParams
from ppo_jax.rlhf.setup import RLSetup, make_setup


def eligible(config: RLHFConfig, setup: RLSetup) -> bool:
    """Whether the run's programs can be compiled from shapes alone (see the module docstring)."""
    return setup.sharding is None and not hf_model.is_checkpoint(config)


def abstract_frozen(config: RLHFConfig) -> Frozen:
    """The shapes of phase 1's result: the reference (the policy's initial parameters), the reward
    model (trained from the pretrained policy: the same shapes) and its score statistics."""
    setup = make_setup(config)
    reference = jax.eval_shape(setup.policy.init, jax.random.key(0))
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    return Frozen(reference, reference if setup.task.needs_reward_model else None, scalar, scalar)


class RLPrograms(NamedTuple):
    """Futures of the programs after phase 1: the evaluation and one RL chunk per chunk length."""

    evaluate: Future | None = None
    chunks: dict[int, Future] = {}


def start_rl_programs(
    config: RLHFConfig, eval_setup: RLSetup, setup: RLSetup, prompts: jax.Array, eval_key: jax.Array,
    rl_keys: jax.Array, hp: Any, callback: Any, options: RunOptions | None, after: Future | None = None,
) -> RLPrograms:  # fmt: skip
    """Start compiling the evaluation (`finetune.evaluate` of `eval_setup`) and the RL chunk
    (`rl_run.run_chunk`) of every chunk length of the run (`rl_run.chunk_schedule`), on one
    thread, once `after` (the pretraining chunk's compile) is done; `RLPrograms()` (nothing
    ahead) when the run is not `eligible`."""
    if not (eligible(config, setup) and eligible(config, eval_setup)):
        return RLPrograms()
    in_program, lengths = chunk_schedule(setup, callback, options or RunOptions())
    frozen = abstract_frozen(eval_setup.config)

    def evaluation():
        return evaluate.lower(eval_setup, frozen.reference, frozen, prompts, eval_key).compile()

    def chunk(length: int):
        policy = jax.eval_shape(lambda ref: hf_model.initial_policy(config, ref, jax.random.key(0)), frozen.reference)
        params = RLParams(policy, policy if config.algorithm.critic else None)
        states = jax.eval_shape(functools.partial(init_states, setup), hp, params, rl_keys)
        return run_chunk.lower(setup, in_program, hp, frozen, states, length).compile()

    futures = ahead.in_thread([evaluation] + [functools.partial(chunk, n) for n in lengths], after)
    return RLPrograms(futures[0], dict(zip(lengths, futures[1:], strict=True)))
