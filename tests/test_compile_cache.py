"""Compiled programs are reused: traced hyperparameters are arguments of the program (never baked-in
constants), and a second process running the same command, progress line on, loads every program
from the persistent cache (it compiles none) and trains to the same parameters."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading

import jax
import numpy as np

from ppo_jax.config import TRACED_FIELDS, PPOConfig
from ppo_jax.engine.train import broadcast_hparams, make_context, run_updates
from ppo_jax.runtime import compile_cache
from ppo_jax.runtime.runners import init_runs

TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1, total_timesteps=160)


def lowered_text(config: PPOConfig) -> str:
    """The StableHLO of the default run's chunk program for `config` (2 seeds)."""
    ctx = make_context(config)
    hparams = broadcast_hparams(config.hyperparams(), 2)
    state = jax.eval_shape(functools.partial(init_runs, ctx), np.zeros(2, np.uint32), hparams)
    program = jax.jit(functools.partial(run_updates, ctx, num_updates=2, batched=True))
    return program.lower(state, hparams).as_text()


def test_traced_hyperparameters_enter_the_program_as_arguments():
    base = PPOConfig(**TINY)
    # every traced field gets a value of its own, none equal to the default
    changed = base.replace(**{name: getattr(base, name) * 0.5 + 0.01 for name in TRACED_FIELDS})
    assert all(getattr(changed, n) != getattr(base, n) for n in TRACED_FIELDS)
    assert lowered_text(changed) == lowered_text(base)
    # a static field does change the program (the comparison above can fail)
    assert lowered_text(base.replace(num_envs=4)) != lowered_text(base)


# `ppo-jax ARGV` in this interpreter, with JAX's own events counted by a listener of the test's:
# every XLA compile-or-load of a program is one backend-compile duration event, a load from the
# persistent cache is one cache-hit event. The counts go to stdout's last line.
COUNTING_MAIN = """
import json, sys
import jax.monitoring
from ppo_jax.commands.main import main
seen = {"compile_or_load": 0, "hits": 0}
def duration(event, seconds, **kwargs):
    seen["compile_or_load"] += event == "/jax/core/compile/backend_compile_duration"
def event(name, **kwargs):
    seen["hits"] += name == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_duration_secs_listener(duration)
jax.monitoring.register_event_listener(event)
code = main(sys.argv[1:])
print(json.dumps(seen))
sys.exit(code)
"""


def _train(cache: str, out: str, *flags: str) -> tuple[dict, int, str]:
    """(summary, programs XLA compiled, stderr) of `ppo-jax train` on TINY in a fresh process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": cache}
    argv = ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()], "--out", out, *flags]
    cmd = [sys.executable, "-c", COUNTING_MAIN, *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f), seen["compile_or_load"] - seen["hits"], proc.stderr


def test_a_second_process_with_the_progress_line_compiles_nothing_and_trains_the_same(tmp_path):
    cache = str(tmp_path / "cache")
    # the command as a user types it: the progress line on (no --quiet)
    (first, first_compiled, progress), (second, second_compiled, _) = (
        _train(cache, str(tmp_path / name)) for name in ("a", "b")
    )
    other_lr, other_compiled, _ = _train(cache, str(tmp_path / "c"), "--lr", "1e-3", "--quiet")
    uncached, _, _ = _train(cache, str(tmp_path / "d"), "--no-compile-cache", "--quiet")
    assert "steps/s" in progress  # the line was shown
    assert first_compiled > 0 and second_compiled == 0 and other_compiled == 0
    assert first["compile_cache_dir"] == os.path.join(cache, "ppo_jax")
    hits = [run["compile_cache_hit"] for run in (first, second, other_lr)]
    assert hits == [False, True, True]
    assert second["params_sha256"] == first["params_sha256"] == uncached["params_sha256"]
    assert other_lr["params_sha256"] != first["params_sha256"]
    assert uncached["compile_cache_dir"] is None and uncached["compile_cache_hit"] is False


class _FakeLowered:
    """A lowering whose `compile()` reports JAX's events: `here` compiles in the calling thread,
    `loads` loads from the cache there, `elsewhere` compiles in another thread meanwhile."""

    def __init__(self, here: int = 0, loads: int = 0, elsewhere: int = 0):
        self.here, self.loads, self.elsewhere = here, loads, elsewhere

    def compile(self, compiler_options=None) -> str:
        def one_compile():
            jax.monitoring.record_event_duration_secs(compile_cache.COMPILE_EVENT, 0.01)

        for _ in range(self.elsewhere):
            other = threading.Thread(target=one_compile)
            other.start()
            other.join()
        for _ in range(self.here):
            one_compile()
        for _ in range(self.loads):
            one_compile()
            jax.monitoring.record_event(compile_cache.HIT_EVENT)
        return "executable"


def test_compile_here_tells_a_compile_from_a_load_in_its_own_thread_only():
    before = compile_cache.loads()
    assert compile_cache.compile_here(_FakeLowered(here=1)) == ("executable", True)
    assert compile_cache.compile_here(_FakeLowered(loads=1)) == ("executable", False)
    # a compile of another thread at the same time is not this program's
    assert compile_cache.compile_here(_FakeLowered(loads=1, elsewhere=2)) == ("executable", False)
    assert compile_cache.compiled_since(before) == 3  # the process-wide count sees all of them
