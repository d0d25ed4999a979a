"""One writer per output folder. Another process holds a folder with a plain `flock` (the
operating system's lock, taken here without ppo_jax); every command given that folder, with or
without --overwrite or --resume, is refused before it deletes or compiles anything, with one line
naming the flag. The library's own hold is seen from outside the same way: by a second process
trying `flock` on the folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ppo_jax.commands.main import main
from ppo_jax.config import default_config
from ppo_jax.errors import ConfigError
from ppo_jax.runtime import driver, folder_lock, sweeps
from tests.test_failures import STEPS, TINY, assert_fails_cleanly, ppo_jax_cli

pytest.importorskip("fcntl")

TINY_FIELDS = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1, total_timesteps=160)  # TINY, STEPS

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills this process)
"""

PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("busy")
"""


def probe(folder: Path) -> str:
    """'free' or 'busy': whether another process can lock `folder` now."""
    return subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True).stdout.strip()


class Holder:
    """Another process holding `folder` with flock until `stop` (or until it is killed)."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"

    def stop(self, kill: bool = False) -> None:
        self.proc.kill() if kill else self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["train", *TINY, *STEPS, "--checkpoint-every", "2", "--out", str(out), "--quiet"]) == 0
    return out


def test_commands_refuse_a_folder_another_process_writes_and_delete_nothing(run_dir, tmp_path):
    before = sorted(p.name for p in run_dir.iterdir())
    holder = Holder(run_dir)
    try:
        words = ("out: ", "another process", str(run_dir), "--out")
        assert_fails_cleanly(ppo_jax_cli("train", *TINY, *STEPS, "--out", run_dir, "--overwrite", "--quiet"), 2, *words)
        assert sorted(p.name for p in run_dir.iterdir()) == before  # --overwrite deleted nothing
        assert_fails_cleanly(ppo_jax_cli("train", "--resume", run_dir, "--quiet"), 2, "resume: ", "another process")
        with pytest.raises(ConfigError, match="another process") as err:  # the library: before compiling
            driver.run(default_config("CartPole-v1"), out=run_dir, overwrite=True)
        assert err.value.field == "out"
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        holder.stop(kill=True)  # a killed holder leaves no lock behind
    assert probe(run_dir) == "free"
    assert main(["train", *TINY, *STEPS, "--out", str(run_dir), "--overwrite", "--quiet"]) == 0


def test_a_sweep_folder_is_held_from_planning_to_the_end_of_the_sweep(tmp_path):
    out = tmp_path / "sweep"
    cfg = default_config("CartPole-v1").replace(**TINY_FIELDS)
    plan = sweeps.plan_sweep(cfg, {"lr": [1e-3, 3e-4]}, 1, out=out)
    assert folder_lock.is_held(out) and probe(out) == "busy"
    sweeps.run_sweep(plan)
    assert not folder_lock.is_held(out) and probe(out) == "free"
    assert (out / "sweep.json").exists()
    holder = Holder(out)
    try:
        grid = ["--grid", "lr=1e-3,3e-4", "--seeds", "1"]
        argv = ("sweep", *TINY, *STEPS, *grid, "--out", out, "--overwrite", "--quiet")
        assert_fails_cleanly(ppo_jax_cli(*argv), 2, "out: ", "another process")
        assert (out / "sweep.json").exists()
    finally:
        holder.stop()


def test_a_run_folder_is_free_again_after_its_run_or_a_refused_plan(run_dir, tmp_path):
    cfg = default_config("CartPole-v1").replace(**TINY_FIELDS)
    with pytest.raises(ConfigError):  # the folder holds a run: refused without --overwrite
        driver.plan_run(cfg, out=run_dir)
    assert not folder_lock.is_held(run_dir) and probe(run_dir) == "free"
    plan = driver.plan_run(cfg, out=tmp_path / "fresh")
    assert probe(tmp_path / "fresh") == "busy"
    driver.execute(plan)
    assert probe(tmp_path / "fresh") == "free"
    assert (tmp_path / "fresh" / "summary.json").exists()


def test_hold_is_reentrant_in_one_process(tmp_path):
    folder_lock.hold(tmp_path / "f")
    folder_lock.hold(tmp_path / "f")
    folder_lock.release(tmp_path / "f")
    assert probe(tmp_path / "f") == "busy"
    folder_lock.release(tmp_path / "f")
    assert probe(tmp_path / "f") == "free"
