"""Programs of an `rlhf` run compiled ahead of their phase, on threads, from the shapes of their
arguments, while the earlier phases run.

XLA compiles a program on one core, and the run's programs used to compile one after another as
each phase began. On a first run of the default `ppo-jax rlhf` on one CPU core: the RL chunk 24 s,
the pretraining chunk 10.7 s, the evaluation 5.8 s, the pretraining start 5.6 s. Lowered from
`jax.eval_shape` of their arguments, the pretraining chunk compiles on a thread while its start
compiles on the main one, and the evaluation and the RL chunks compile on another thread once the
pretraining chunk has compiled (before, they took a share of its core and pretraining began
5.6 s later), while pretraining runs. A phase then calls the compiled executable
(`jax.stages.Compiled`, which takes the dynamic arguments alone) or, when nothing was compiled
ahead for it, its jitted function as before. The executables are the ones the jitted functions
would build: the same lowering, the same persistent-cache entry.

This module holds the two primitives (`in_thread`, `call`); `rl_programs` starts the programs
after phase 1, `pretrain.chunk_ahead` the pretraining chunk (`pipeline.run_rlhf` starts it first)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any


def in_thread(builds: list[Callable[[], Any]], after: Future | None = None) -> list[Future]:
    """Run the builds one after another on one daemon thread (in the order they are needed),
    once `after` (if given) is done; each one's result, or the exception it raised, goes to its
    future."""
    futures = [Future() for _ in builds]

    def work() -> None:
        if after is not None:
            wait([after])
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
