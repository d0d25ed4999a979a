"""Programs of an rlhf run compiled ahead on threads (`rlhf.ahead`): the run uses them instead of
its jitted functions and gets bit-identical results; the programs after phase 1 wait for the
pretraining chunk's compile."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import jax
import numpy as np
import pytest

from ppo_jax.rlhf import RLHFConfig, ahead, finetune, make_setup, pretrain, rl_run, run_rlhf
from ppo_jax.rlhf.pipeline import held_out_prompts
from ppo_jax.rlhf.rl_run import RunOptions

TINY = dict(
    d_model=32,
    pretrain_steps=40,
    pretrain_batch=32,
    log_every=20,
    rl_updates=4,
    rl_batch=32,
    group_size=4,
    eval_prompts=64,
    seed=3,
)


def run(config: RLHFConfig):
    reports = []
    result = run_rlhf(config, callback=lambda *a: reports.append(a[:2]), options=RunOptions(report_every=2))
    return result, reports


def jit_cache_sizes() -> list[int]:
    return [f._cache_size() for f in (pretrain._pretrain_chunk, finetune.evaluate, rl_run.run_chunk)]


@pytest.fixture(scope="module")
def runs():
    config = RLHFConfig(**TINY)
    before = jit_cache_sizes()
    compiled_ahead = run(config)
    sizes = jit_cache_sizes()
    with pytest.MonkeyPatch.context() as patch:  # nothing ahead: every program through its jitted function
        patch.setattr(ahead, "in_thread", lambda builds, after=None: [None] * len(builds))
        plain = run(config)
    return before, sizes, compiled_ahead, plain, jit_cache_sizes()


def test_run_calls_the_programs_compiled_ahead_not_its_jitted_functions(runs):
    before, sizes, _, _, after_plain = runs
    assert sizes == before  # no jitted call of the pretraining chunk, the evaluation or the RL chunk
    assert all(a > b for a, b in zip(after_plain, before, strict=True))  # the plain run did call each


def test_programs_compiled_ahead_give_the_same_run(runs):
    _, _, (a, reports_a), (b, reports_b), _ = runs
    assert reports_a == reports_b and len(reports_a) > 0
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])
    np.testing.assert_array_equal(a.pretrain_history["loss"], b.pretrain_history["loss"])
    assert a.summary["accuracy_before"] == b.summary["accuracy_before"]
    assert a.summary["accuracy_after"] == b.summary["accuracy_after"]


def test_chunk_schedule_lists_each_length_once_in_order():
    config = RLHFConfig(**{**TINY, "rl_updates": 10})
    setup = make_setup(config.static_rl_config())
    callback = object()
    assert rl_run.chunk_schedule(setup, callback, RunOptions(report_every=4)) == (None, [4, 2])
    assert rl_run.chunk_schedule(setup, callback, RunOptions()) == (callback, [10])
    every_3 = RunOptions(out="x", checkpoint_every=3, report_every=2)  # ends at 2, 3, 4, 6, 8, 9, 10
    assert rl_run.chunk_schedule(setup, callback, every_3) == (None, [2, 1])


def test_builds_wait_for_the_future_they_come_after():
    gate, started = Future(), threading.Event()
    futures = ahead.in_thread([lambda: started.set() or "built"], after=gate)
    assert not started.wait(0.3)  # held back while the pretraining chunk compiles
    gate.set_exception(RuntimeError("a failed compile releases them too"))
    assert futures[0].result(timeout=10) == "built"


def test_held_out_prompts_in_one_program_equal_the_task_run_op_by_op():
    setup = make_setup(RLHFConfig(**TINY).pretraining_config())
    key = jax.random.key(7)
    with jax.disable_jit():
        eager = setup.task.prompts(key, 64, held_out=True)
    np.testing.assert_array_equal(np.asarray(held_out_prompts(setup, key, 64)), np.asarray(eager))
