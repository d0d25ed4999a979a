"""CPU cores as devices: the device count chosen for a number of runs, the user's own setting
taking precedence, and the CLI splitting seeds over the cores before JAX starts.

Each case that needs a fresh JAX (the device count is fixed when the backend starts) runs in a
subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ppo_jax.runtime.cpu import count_set_by_user, devices_for_runs, split_runs_over_cores, usable_cores

TINY = "--num-envs 2 --num-steps 16 --num-minibatches 2 --num-epochs 1 --hidden-sizes 8,8 --total-timesteps 96"


@pytest.mark.parametrize(
    ("runs", "cores", "expected"),
    [(1, 8, 1), (32, 2, 2), (3, 2, 1), (6, 4, 3), (12, 8, 6), (7, 16, 7), (5, 1, 1), (64, 16, 16)],
)
def test_devices_for_runs_is_the_largest_divisor_within_the_cores(runs, cores, expected):
    assert devices_for_runs(runs, cores) == expected
    assert runs % expected == 0 and expected <= max(1, cores)


def test_user_setting_of_the_device_count_is_detected():
    assert count_set_by_user({"JAX_NUM_CPU_DEVICES": "4"})
    assert count_set_by_user({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert not count_set_by_user({"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"})
    assert not count_set_by_user({})


def test_split_is_refused_once_jax_has_started():
    import jax

    jax.numpy.zeros(1).block_until_ready()  # the test process's backend is running
    assert split_runs_over_cores(8, cores=2) == 0


def _python(code: str, env_drop: tuple[str, ...] = ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS"), **env_set: str) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in env_drop} | env_set
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # runs split over the cores with a progress callback: no warnings from XLA's resharding fallback
    assert "spmd_partitioner" not in proc.stderr and "rematerialization" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout


def test_importing_the_package_and_cli_leaves_the_device_count_open():
    out = _python(
        """
        import ppo_jax, ppo_jax.commands.main
        ppo_jax.commands.main.build_parser()
        assert "make_train" in dir(ppo_jax)
        from ppo_jax.runtime.cpu import split_runs_over_cores
        print(split_runs_over_cores(4, cores=2))
        import jax
        print(jax.device_count())
        """
    )
    assert out.split() == ["2", "2"]


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores")
def test_train_cli_spreads_seeds_over_the_cores_and_its_checkpoints_load_on_one_device(tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    argv = ["train", "--seeds", "2", "--checkpoint-every", "1", "--out", str(run), *TINY.split()]
    _python(
        f"""
        import sys
        from ppo_jax.commands.main import main
        sys.exit(main({argv!r}))
        """
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["devices"] == 2
    assert summary["checkpoints_saved"] == 3  # one per update: the program ran again on its own output
    # Another machine's device count: evaluate the run, and resume a copy cut back to update 1.
    shutil.copytree(run, resumed)
    for name in ("2", "3"):
        shutil.rmtree(resumed / "checkpoints" / name)
    (resumed / "summary.json").unlink()
    _python(
        f"""
        import sys
        from ppo_jax.commands.main import main
        assert main(["eval", {str(run)!r}, "--episodes", "2"]) == 0
        sys.exit(main(["train", "--resume", {str(resumed)!r}, "--checkpoint-every", "1", "--quiet"]))
        """,
        JAX_NUM_CPU_DEVICES="1",
    )
    report = json.loads((run / "eval.json").read_text())
    assert report["update"] == 3 and len(report["return_mean_per_seed"]) == 2
    again = json.loads((resumed / "summary.json").read_text())
    assert again["devices"] == 1 and again["checkpoints_saved"] == 2
    np.testing.assert_allclose(again["final_return_mean"], summary["final_return_mean"], rtol=1e-3)


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores")
def test_sweep_cli_spreads_runs_over_the_cores(tmp_path):
    argv = ["sweep", "--seeds", "2", "--grid", "lr=1e-3,3e-4", "--out", str(tmp_path / "sweep"), *TINY.split()]
    _python(
        f"""
        import sys
        from ppo_jax.commands.main import main
        sys.exit(main({argv!r}))
        """
    )
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["devices"] == 2
