"""Fault injection: small finished and interrupted runs, damaged in the ways files get damaged,
then the real command in a subprocess. Every case ends with one line naming the problem and what
to do, the documented exit code, no traceback and nothing from orbax's or XLA's logs; every
command a message suggests works when followed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import ppo_jax
from ppo_jax.commands.main import main

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "1"]
STEPS = ["--total-timesteps", "160"]  # 5 updates
NOISE = ("Traceback", "absl", "Event loop", "spmd_partitioner", "rematerialization", "W0000", "E0000")


def ppo_jax_cli(*argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m ppo_jax.commands.main ARGV` in a fresh process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "ppo_jax.commands.main", *map(str, argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def assert_fails_cleanly(result, code: int, *words: str) -> str:
    """The exit code, one error line last on stderr naming `words`, and no noise."""
    rc, out, err = result
    assert rc == code, (rc, out, err)
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("ppo-jax: error: "), err
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    assert not [line for line in err.splitlines() if any(n in line for n in NOISE)], err
    return lines[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, *STEPS, "--checkpoint-every", "2", "--out", str(out), "--quiet"]) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_eval_refuses_what_is_not_a_training_run(finished, tmp_path):
    assert_fails_cleanly(ppo_jax_cli("eval", tmp_path / "missing"), 2, "does not exist")
    (tmp_path / "file.npz").write_bytes(b"x")
    assert_fails_cleanly(ppo_jax_cli("eval", tmp_path / "file.npz"), 2, "is a file")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    assert_fails_cleanly(ppo_jax_cli("eval", tmp_path / "sweep"), 2, "holds a sweep")
    (tmp_path / "compare" / "arms" / "clip").mkdir(parents=True)
    (tmp_path / "compare" / "compare_plan.json").write_text("{}")
    message = f"evaluate one of its run folders: ppo-jax eval {tmp_path / 'compare' / 'arms' / 'clip'}"
    assert_fails_cleanly(ppo_jax_cli("eval", tmp_path / "compare"), 2, "holds an objective comparison", message)


def test_load_reads_a_run_folder_and_one_of_its_checkpoints(finished):
    """`ppo_jax.load` on a train run folder: the newest checkpoint, whose parameters hash to the
    run's recorded params_sha256; on an older checkpoint folder: that update's state."""
    from ppo_jax.config import config_from_record
    from ppo_jax.runtime.files import params_sha256

    state, config = ppo_jax.load(finished)
    summary = json.loads((finished / "summary.json").read_text())
    assert params_sha256(state.params) == summary["params_sha256"]
    assert config == config_from_record(json.loads((finished / "config.json").read_text()))
    updates = sorted(int(p.name) for p in (finished / "checkpoints").iterdir() if p.name.isdigit())
    older, _ = ppo_jax.load(finished / "checkpoints" / str(updates[0]))
    assert params_sha256(older.params) != summary["params_sha256"]
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key) and older.key.shape == state.key.shape


def test_damaged_checkpoint_metadata_names_the_checkpoint_and_the_older_ones(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "checkpoints" / "5" / "_CHECKPOINT_METADATA").write_bytes(b"\x00garbage")
    for path in (run / "checkpoints" / "5" / "meta").iterdir():
        path.write_bytes(b"{ truncated")
    for argv in (("eval", run, "--episodes", "2"), ("train", "--resume", run, "--quiet")):
        assert_fails_cleanly(ppo_jax_cli(*argv), 1, "checkpoints/5", "older checkpoints [2, 4]")


def test_corrupted_checkpoint_arrays_are_reported_and_the_older_checkpoint_still_works(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    for path in (run / "checkpoints" / "5" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a truncated write
    line = assert_fails_cleanly(ppo_jax_cli("eval", run, "--episodes", "2"), 1, "corrupted or incomplete")
    assert "move this one out" in line
    shutil.move(run / "checkpoints" / "5", tmp_path / "moved-away")  # following the advice
    rc, out, err = ppo_jax_cli("eval", run, "--episodes", "2")
    assert rc == 0 and "@ update 4" in out, err


def test_a_checkpoint_of_another_format_says_which_version_reads_it(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    for ckpt in (run / "checkpoints").iterdir():
        meta_file = ckpt / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        meta["format_version"] = 1
        meta_file.write_text(json.dumps(meta))
    assert_fails_cleanly(ppo_jax_cli("eval", run), 1, "has format 1", "ppo_jax version that wrote it")


def test_a_damaged_summary_of_a_finished_run_is_written_again_from_its_final_checkpoint(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "summary.json").write_text('{"env": "CartP')
    rc, out, err = ppo_jax_cli("train", "--resume", run, "--quiet")
    assert rc == 0, err
    assert "summary.json" in out and "writing the run's files again" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params_sha256"] == json.loads((finished / "summary.json").read_text())["params_sha256"]


def test_a_run_that_failed_before_its_first_checkpoint_is_no_dead_end(tmp_path):
    run = tmp_path / "nan"
    line = assert_fails_cleanly(ppo_jax_cli("train", *TINY, *STEPS, "--lr", "1e30", "--out", run, "--quiet"), 3)
    assert "at update 1" in line and "--overwrite" in line
    # every command on the folder advises training it again with --overwrite and a lower --lr, never
    # --resume (the same config would repeat the NaN); the advice works when followed
    overwrite = f"ppo-jax train --overwrite --out {run}"
    commands = [(["train", *TINY, *STEPS, "--out", run, "--quiet"], 2), (["eval", run], 1)]
    for argv, code in [*commands, (["train", "--resume", run, "--quiet"], 2)]:
        line = assert_fails_cleanly(ppo_jax_cli(*argv), code)
        assert overwrite in line and "lower --lr" in line and "--resume" not in line
    rc, _, err = ppo_jax_cli("train", *TINY, *STEPS, "--out", run, "--overwrite", "--quiet")
    assert rc == 0, err
    assert json.loads((run / "config.json").read_text())["lr"] == pytest.approx(ppo_jax.default_config().lr)


def test_resume_without_a_checkpoint_restarts_from_its_config(tmp_path):
    run = tmp_path / "stopped-early"
    run.mkdir()
    config = {**ppo_jax.default_config(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1).to_dict()}
    (run / "config.json").write_text(json.dumps({**config, "total_timesteps": 160, "seeds": [3]}))
    rc, out, err = ppo_jax_cli("train", "--resume", run, "--quiet")
    assert rc == 0, err
    assert json.loads((run / "summary.json").read_text())["seeds"] == [3]
    (run / "config.json").write_text('{"env": ')
    for name in ("summary.json", "metrics.csv"):
        (run / name).unlink()
    shutil.rmtree(run / "checkpoints")
    assert_fails_cleanly(ppo_jax_cli("train", "--resume", run, "--quiet"), 1, "config.json", "not valid JSON")


def test_sweep_and_compare_treat_a_used_folder_as_train_does(tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    grid = ["--grid", "lr=1e-3,3e-4", "--seeds", "1"]
    assert_fails_cleanly(ppo_jax_cli("sweep", *TINY, *STEPS, *grid, "--out", out, "--quiet"), 2, "--overwrite")
    other = tmp_path / "used-compare"  # a folder of its own kind (another kind's is refused even with --overwrite)
    other.mkdir()
    (other / "compare.json").write_text("{}")
    assert_fails_cleanly(ppo_jax_cli("compare", *TINY, *STEPS, "--seeds", "1", "--out", other), 2, "--overwrite")


def test_bare_command_lists_the_commands_and_starts_nothing():
    rc, out, err = ppo_jax_cli()
    assert rc == 0 and "train" in out and "eval" in out and "sweep" in out
    assert "training" not in out + err


@pytest.mark.parametrize(
    "content, problem",
    [(b"not a zip archive", "not a ppo_jax policy file"), (None, "missing"), ("pickled", "not a ppo_jax policy file")],
)
def test_load_policy_names_a_file_that_is_not_a_policy(tmp_path, content, problem):
    path = tmp_path / "policy.npz"
    if content == "pickled":
        np.savez(path, meta_json=np.array([{"format": 2}], dtype=object), **{"params/w": np.zeros(2)})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ppo_jax.RunFileError) as err:
        ppo_jax.load_policy(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_a_writer_killed_in_the_middle_of_a_checkpoint_leaves_the_previous_one_usable(tmp_path):
    """SIGKILL while orbax writes a checkpoint (its temporary folder exists): the folder is not
    taken for a checkpoint, the newest complete one is evaluated and the run resumes from it."""
    import signal
    import time

    for attempt in range(5):
        out = tmp_path / f"killed{attempt}"
        argv = [*TINY, "--total-timesteps", str(32 * 400), "--checkpoint-every", "1", "--out", out, "--quiet"]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.Popen([sys.executable, "-m", "ppo_jax.commands.main", "train", *map(str, argv)], env=env)
        deadline, caught = time.monotonic() + 240, False
        while proc.poll() is None and time.monotonic() < deadline:
            ckpts = out / "checkpoints"
            names = [p.name for p in ckpts.iterdir()] if ckpts.is_dir() else []
            if sum(n.isdigit() for n in names) >= 2 and any("tmp" in n for n in names):
                proc.send_signal(signal.SIGKILL)
                caught = True
                break
            time.sleep(0.001)
        proc.wait()
        if caught:
            break
    assert caught, "no checkpoint was caught half-written"
    rc, out_text, err = ppo_jax_cli("eval", out, "--episodes", "2")
    assert rc == 0, err
    rc, _, err = ppo_jax_cli("train", "--resume", out, "--quiet")
    assert rc == 0, err
    assert json.loads((out / "summary.json").read_text())["num_updates"] == 400
