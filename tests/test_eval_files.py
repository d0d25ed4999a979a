"""`ppo-jax eval` of a finished run reads its exported policy files, which hold the parameters of
its newest checkpoint: the same report as from the checkpoint, without importing orbax; anything
else (a file missing, older than the newest checkpoint) is read from the checkpoint.

On a repeat it runs the evaluation program it kept whole (`runtime.eval_program`): without
importing the policy family, the environment suite, Flax, optax or orbax, without tracing, and
with the same eval.json as the program built from the run folder. An entry that no longer fits (a
module file changed, other episodes, policy files that are not the run's final parameters) is
not used."""

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
from ppo_jax.runtime import eval_program
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
    stamps = {seed: (finished / f"policy-seed{seed}.npz").stat().st_mtime_ns for seed in (0, 1)}
    try:
        for seed in (0, 1):  # an older policy file than the newest checkpoint is not used
            os.utime(finished / f"policy-seed{seed}.npz", ns=(0, 0))
        assert final_policies(finished) is None
        slow = _eval(finished, "--seed", "3")
    finally:
        for seed, stamp in stamps.items():
            os.utime(finished / f"policy-seed{seed}.npz", ns=(stamp, stamp))
    assert final_policies(finished) is not None
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


# --- the evaluation program kept for a repeat (runtime.eval_program) ---------------------------

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
# What the evaluation program needs only to be built: none of it may be imported on a repeat.
NOT_ON_A_REPEAT = (
    "flax",
    "gymnax",
    "optax",
    "orbax",
    "chex",
    "distrax",
    "matplotlib",
    "ppo_jax.rlhf",
    "ppo_jax.config",
    "ppo_jax.core",
    "ppo_jax.engine",
    "ppo_jax.envs",
    "ppo_jax.policies",
    "ppo_jax.runtime.evaluation",
    "ppo_jax.runtime.checkpoint",
)


def test_a_repeat_imports_nothing_the_program_was_built_from(finished):
    flags = ["--episodes", "3", "--stochastic", "--seed", "7"]
    first = _eval(finished, *flags[2:])  # builds and keeps the program (or runs the one kept already)
    # the same settings as this process (the test configuration's rank promotion) use the same program
    settings = "import jax\njax.config.update('jax_numpy_rank_promotion', 'raise')\n"
    assert _imported_by_a_fresh_eval(finished, flags, settings) == []
    assert json.loads((finished / "eval.json").read_text()) == first


def _imported_by_a_fresh_eval(run, flags: list[str], settings: str = "", env: dict | None = None) -> list[str]:
    """The modules of `NOT_ON_A_REPEAT` that `ppo-jax eval RUN FLAGS` imports in a new interpreter
    (after the Python lines `settings`)."""
    code = (
        f"import json, sys\n{settings}from ppo_jax.commands.main import main\n"
        f"assert main(['eval', {str(run)!r}, *{flags!r}]) == 0\n"
        f"found = [m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in {NOT_ON_A_REPEAT!r})]\n"
        "print(json.dumps(sorted(found)))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _traces_of(fn) -> int:
    count = [0]

    def listener(event, duration, **kwargs):
        count[0] += event == TRACE_EVENT

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return count[0]


def test_the_kept_program_gives_the_results_of_the_program_built_from_the_run(finished):
    built = _eval(finished, "--stochastic", "--seed", "5")  # built and kept (or run as kept already)
    reports = []
    assert _traces_of(lambda: reports.append(_eval(finished, "--stochastic", "--seed", "5"))) == 0
    assert _traces_of(lambda: reports.append(_eval(finished, "--stochastic", "--seed", "5", "--no-compile-cache"))) > 0
    assert reports[0] == built == reports[1]
    other_seed = _eval(finished, "--stochastic", "--seed", "6")  # the seed is an argument: the same program
    assert other_seed["return_mean_per_seed"] != built["return_mean_per_seed"]
    assert other_seed == _eval(finished, "--stochastic", "--seed", "6", "--no-compile-cache")


def test_an_entry_that_no_longer_fits_is_not_used(finished):
    _eval(finished)  # keeps the deterministic program for 3 episodes
    assert eval_program.load_program(finished, 3, False) is not None
    assert eval_program.load_program(finished, 4, False) is None  # other episodes: another program
    key = eval_program.program_key((finished / "config.json").read_bytes(), 3, False)
    path = eval_program.store_folder() / f"{key}.json"
    kept = path.read_text()
    entry = json.loads(kept)
    entry["modules"][0][2] += 1  # as if that module's file had been edited since
    path.write_text(json.dumps(entry))
    assert eval_program.load_program(finished, 3, False) is None
    path.write_text(kept)
    policy = finished / "policy-seed1.npz"
    stamp = policy.stat().st_mtime_ns
    os.utime(policy, ns=(0, 0))  # older than the newest checkpoint: not the run's final parameters
    try:
        assert eval_program.load_program(finished, 3, False) is None
    finally:
        os.utime(policy, ns=(stamp, stamp))
    assert eval_program.load_program(finished, 3, False) is not None


def test_a_program_found_only_in_jax_s_cache_is_compiled_again_and_kept(finished):
    reference = _eval(finished)  # kept here, and in JAX's cache (on in this process)
    key = eval_program.program_key((finished / "config.json").read_bytes(), 3, False)
    digest = json.loads((eval_program.store_folder() / f"{key}.json").read_text())["program"]
    (eval_program.store_folder() / "programs" / f"{digest}.bin").unlink()
    assert eval_program.load_program(finished, 3, False) is None
    assert _eval(finished) == reference  # loaded from JAX's cache: compiled afresh and kept
    assert eval_program.load_program(finished, 3, False) is not None


# --- the evaluation a training run keeps while it trains (runtime.eval_ahead) ------------------

MAIN = "import sys\nfrom ppo_jax.commands.main import main\nsys.exit(main(sys.argv[1:]))"


def test_the_first_eval_after_train_runs_the_program_the_run_kept(tmp_path):
    """`ppo-jax train` keeps the evaluation `ppo-jax eval RUN` runs by default while it trains:
    the first eval in a new process imports nothing that program is built from (it would build it
    otherwise), and reports what the program built from the run folder reports."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = tmp_path / "run"
    argv = ["train", *TINY, "--total-timesteps", "320", "--normalize-obs", "--out", str(run)]
    done = subprocess.run([sys.executable, "-c", MAIN, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _imported_by_a_fresh_eval(run, [], env=env) == []
    kept = json.loads((run / "eval.json").read_text())
    assert kept["episodes_per_seed"] == 100 and kept["update"] == 10
    assert main(["eval", str(run), "--no-compile-cache", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text()) == kept


def test_eval_counts_and_reports_the_episodes_its_step_limit_cuts(finished, tmp_path, monkeypatch, capsys):
    """An evaluation limit of 5 steps cuts every CartPole episode (none ends so early: the pole
    starts within 0.05 rad of upright and falls past 0.21 rad no sooner than about 8 steps), and
    eval.json and the command say so; with the env's own limit (500) none is cut."""
    import shutil

    from ppo_jax.runtime import evaluation

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    whole = _eval(run, "--no-compile-cache")
    assert whole["episodes_unfinished"] == 0 and "had not ended" not in capsys.readouterr().out
    monkeypatch.setattr(evaluation, "max_episode_steps", lambda env_params: 5)
    cut = _eval(run, "--no-compile-cache")
    assert cut["episodes_unfinished"] == 2 * 3 and cut["length_mean"] == 5
    assert "note: 6 episodes had not ended after 5 steps" in capsys.readouterr().out
    assert cut["return_mean"] == 5.0  # CartPole pays 1 per step
