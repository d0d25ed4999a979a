"""Compiled programs are reused: traced hyperparameters are arguments of the program (never baked-in
constants), and a second process running the same command loads its programs from the persistent
cache and trains to the same parameters."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np

from ppo_jax.config import TRACED_FIELDS, PPOConfig
from ppo_jax.engine.train import broadcast_hparams, make_context, run_updates
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


def _train(cache: str, out: str, *flags: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": cache}
    argv = ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()], "--out", out, "--quiet", *flags]
    cmd = [sys.executable, "-m", "ppo_jax.commands.main", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def test_a_second_process_loads_the_programs_from_the_cache_and_trains_the_same(tmp_path):
    cache = str(tmp_path / "cache")
    first = _train(cache, str(tmp_path / "a"))
    second = _train(cache, str(tmp_path / "b"))
    other_lr = _train(cache, str(tmp_path / "c"), "--lr", "1e-3")
    uncached = _train(cache, str(tmp_path / "d"), "--no-compile-cache")
    assert first["compile_cache_dir"] == os.path.join(cache, "ppo_jax")
    hits = [run["compile_cache_hit"] for run in (first, second, other_lr)]
    assert hits == [False, True, True]
    assert second["params_sha256"] == first["params_sha256"] == uncached["params_sha256"]
    assert other_lr["params_sha256"] != first["params_sha256"]
    assert uncached["compile_cache_dir"] is None and uncached["compile_cache_hit"] is False
