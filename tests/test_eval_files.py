"""`ppo-jax eval` of a finished run reads its exported policy files, which hold the parameters of
its newest checkpoint: the same report as from the checkpoint, without importing orbax; anything
else (a file missing, older than the newest checkpoint) is read from the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ppo_jax.commands.main import main
from ppo_jax.engine.train import make_context
from ppo_jax.runtime.checkpoint import RunCheckpoints
from ppo_jax.runtime.policy_file import final_policies

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    argv = ["train", *TINY, "--total-timesteps", "320", "--seeds", "2", "--normalize-obs", "--out", str(run)]
    assert main([*argv, "--quiet", "--checkpoint-every", "4"]) == 0
    return run


def _eval(run, *flags: str) -> dict:
    assert main(["eval", str(run), "--episodes", "3", *flags]) == 0
    return json.loads((run / "eval.json").read_text())


def test_the_policy_files_hold_the_newest_checkpoint_s_parameters(finished):
    final = final_policies(finished)
    assert final is not None and final.update == 10 and final.seeds == [0, 1]
    store = RunCheckpoints(finished, create=False)
    assert store.latest_update() == 10
    saved, _ = store.restore(make_context(final.config))
    store.close()
    assert jax.tree.structure(saved.state.params) == jax.tree.structure(final.params)
    for a, b in zip(jax.tree.leaves(saved.state.params), jax.tree.leaves(final.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    np.testing.assert_array_equal(np.asarray(saved.state.env.obs_stats.mean), final.obs_stats.mean)
    np.testing.assert_array_equal(np.asarray(saved.state.env.obs_stats.var), final.obs_stats.var)


def test_eval_from_the_policy_files_equals_eval_from_the_checkpoint(finished):
    fast = _eval(finished, "--seed", "3")
    for seed in (0, 1):  # an older policy file than the newest checkpoint is not used
        os.utime(finished / f"policy-seed{seed}.npz", ns=(0, 0))
    assert final_policies(finished) is None
    slow = _eval(finished, "--seed", "3")
    assert fast == slow
    assert fast["update"] == 10 and len(fast["return_mean_per_seed"]) == 2


def test_eval_of_a_finished_run_does_not_import_orbax(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--total-timesteps", "160", "--quiet", "--out", str(run)]) == 0
    code = (
        "import sys\nfrom ppo_jax.commands.main import main\n"
        f"assert main(['eval', {str(run)!r}, '--episodes', '2']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'orbax'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
