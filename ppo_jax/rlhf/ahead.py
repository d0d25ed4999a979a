"""Programs of an `rlhf` run compiled ahead of their phase, on threads, from the shapes of their
arguments, while the earlier phases run.

XLA compiles a program on one core, and the run's programs used to compile one after another as
each phase began. On a first run of the default `ppo-jax rlhf` on one CPU core: the RL chunk 24 s,
the pretraining chunk 10.7 s, the evaluation 5.8 s, the pretraining start 5.6 s. Lowered from
`jax.eval_shape` of their arguments, the evaluation and the RL chunks compile on one thread while
pretraining runs (and the pretraining chunk while its start compiles); a phase then calls the
compiled executable (`jax.stages.Compiled`, which takes the dynamic arguments alone) or, when
nothing was compiled ahead for it, its jitted function as before. The executables are the ones
the jitted functions would build: the same lowering, the same persistent-cache entry.

Only for a run on one device (no `--shard-params` mesh: an executable lowered from shapes alone
has no placement) whose model is built from its config (not `hf:`, whose parameter shapes come
from files read later)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppo_jax.rlhf import hf_model
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.rollout import Frozen, RLParams
from ppo_jax.rlhf.setup import RLSetup, make_setup


def in_thread(builds: list[Callable[[], Any]]) -> list[Future]:
    """Run the builds one after another on one daemon thread (in the order they are needed);
    each one's result, or the exception it raised, goes to its future."""
    futures = [Future() for _ in builds]

    def work() -> None:
        for future, build in zip(futures, builds, strict=True):
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(build())
            except BaseException as err:  # raised again where the program is called
                future.set_exception(err)

    threading.Thread(target=work, name="ppo_jax-compile", daemon=True).start()
    return futures


def call(future: Future | None, jitted: Callable[[], Any], *dynamic):
    """`future`'s compiled program on the dynamic arguments, or `jitted()` (the jitted function on
    all of its arguments) when nothing was compiled ahead (`future` None)."""
    return jitted() if future is None else future.result()(*dynamic)


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
    rl_keys: jax.Array, hp: Any, in_program: Any, lengths: list[int],
) -> RLPrograms:  # fmt: skip
    """Start compiling the evaluation (`finetune.evaluate` of `eval_setup`) and the RL chunk
    (`rl_run.run_chunk`) of every length in `lengths`, on one thread; `RLPrograms()` (nothing
    ahead) when the run is not `eligible`."""
    if not (eligible(config, setup) and eligible(config, eval_setup)):
        return RLPrograms()
    frozen = abstract_frozen(eval_setup.config)

    def evaluation():
        from ppo_jax.rlhf.finetune import evaluate

        return evaluate.lower(eval_setup, frozen.reference, frozen, prompts, eval_key).compile()

    def chunk(length: int):
        from ppo_jax.rlhf.rl_run import init_states, run_chunk

        policy = jax.eval_shape(lambda ref: hf_model.initial_policy(config, ref, jax.random.key(0)), frozen.reference)
        params = RLParams(policy, policy if config.algorithm.critic else None)
        states = jax.eval_shape(functools.partial(init_states, setup), hp, params, rl_keys)
        return run_chunk.lower(setup, in_program, hp, frozen, states, length).compile()

    futures = in_thread([evaluation] + [functools.partial(chunk, n) for n in lengths])
    return RLPrograms(futures[0], dict(zip(lengths, futures[1:], strict=True)))
