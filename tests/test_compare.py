"""Objective choice in the training loop and the `compare` command."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import ppo_jax
from ppo_jax.commands import main as cli
from ppo_jax.runtime.compare import compare, objective_config

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_envs=2, num_steps=16, num_epochs=2, num_minibatches=2, total_timesteps=2 * 16 * 4)


def test_on_policy_objectives_get_one_epoch_of_one_minibatch():
    base = ppo_jax.default_config(**TINY)
    for objective in ("reinforce", "a2c"):
        cfg = objective_config(base, objective)
        assert (cfg.objective, cfg.num_epochs, cfg.num_minibatches) == (objective, 1, 1)
    for objective in ("clip", "kl_penalty"):
        cfg = objective_config(base, objective)
        assert (cfg.num_epochs, cfg.num_minibatches) == (2, 2)
    with pytest.raises(ppo_jax.ConfigError) as err:
        objective_config(base, "ppg")  # not an objective here
    assert err.value.field == "objective"


def test_on_policy_objective_with_several_epochs_is_refused_before_compiling():
    with pytest.raises(ppo_jax.ConfigError) as err:
        ppo_jax.PPOConfig(objective="a2c", num_epochs=4, num_minibatches=4)
    assert err.value.field == "objective" and "num_epochs=1" in str(err.value)


@pytest.mark.parametrize("kl_target, factor", [(1e-12, 2.0), (1e3, 0.5)])
def test_kl_penalty_coefficient_doubles_or_halves_every_update(kl_target, factor):
    # KL of an update is > 0 and far above a target of 1e-12 (β doubles) and far below 1e3 (β halves).
    cfg = ppo_jax.default_config(objective="kl_penalty", kl_coef=0.8, kl_target=kl_target, **TINY)
    result = jax.jit(ppo_jax.make_train(cfg))(jax.random.key(0))
    logged = np.asarray(result.metrics["kl_coef"])  # β used in each update
    np.testing.assert_allclose(logged, 0.8 * factor ** np.arange(cfg.num_updates), rtol=1e-6)
    np.testing.assert_allclose(float(result.state.objective_state), 0.8 * factor**cfg.num_updates, rtol=1e-6)


def test_kl_penalty_adapts_to_the_kl_the_update_ended_at():
    # With one epoch of one minibatch, the KL before the only gradient step is exactly 0; the PPO
    # paper adapts β to the KL after the update, which is > 0 and far above a 1e-12 target, so β
    # must double every update (measuring before the step would halve it every time).
    cfg = ppo_jax.default_config(
        objective="kl_penalty", kl_coef=0.8, kl_target=1e-12, **{**TINY, "num_epochs": 1, "num_minibatches": 1}
    )
    result = jax.jit(ppo_jax.make_train(cfg))(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(result.metrics["approx_kl"]), 0.0)  # measured before the step
    np.testing.assert_allclose(float(result.state.objective_state), 0.8 * 2.0**cfg.num_updates, rtol=1e-6)


def test_clip_objective_has_no_state_and_no_kl_coefficient():
    cfg = ppo_jax.default_config(**TINY)
    result = jax.jit(ppo_jax.make_train(cfg))(jax.random.key(0))
    assert result.state.objective_state == () and "kl_coef" not in result.metrics


# The CLI comparison the tests share: clip and a2c over 2 seeds, 4 updates, a checkpoint every 2.
COMPARE_FLAGS = ["compare", "--seeds", "2", "--objectives", "clip,a2c", "--num-envs", "2", "--num-steps", "16"]
COMPARE_FLAGS += ["--num-epochs", "2", "--num-minibatches", "2", "--total-timesteps", "128", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted `ppo-jax compare` into a folder: (folder, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("compare") / "whole"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert cli.main([*COMPARE_FLAGS, "--out", str(folder)]) == 0
    return folder, out.getvalue(), err.getvalue()


def test_compare_trains_every_objective_and_writes_a_table(whole):
    results = compare(ppo_jax.default_config(**TINY), seeds=(0, 1))
    assert [r.objective for r in results] == ["clip", "kl_penalty", "reinforce", "a2c", "trpo"]
    for r in results:
        assert r.returns.shape == (r.config.num_updates, 2) and r.final_returns.shape == (2,)
        assert r.ci_low <= r.iqm <= r.ci_high
    folder, out, err = whole
    report = json.loads((folder / "compare.json").read_text())
    rows = {row["objective"]: row for row in report["objectives"]}
    assert sorted(rows) == ["a2c", "clip"]
    iqms = [row["iqm"] for row in report["objectives"]]
    assert iqms == sorted(iqms, reverse=True)  # ranked by IQM, best first
    assert rows["a2c"]["num_epochs"] == 1 and rows["clip"]["num_epochs"] == 2
    assert (folder / "compare.png").stat().st_size > 0
    assert "objective" in out
    # progress per arm: compiling, then each objective as it trains and finishes
    assert "compiling 2 programs (concurrently) ..." in err.splitlines()
    assert [line.split(":")[0] for line in out.splitlines() if "): IQM" in line] == ["clip (1/2)", "a2c (2/2)"]
    assert "training clip (1/2): 2 seeds x 128 steps ..." in err.splitlines()
    assert cli.main(["compare", "--objectives", "clip,sarsa"]) == 2


def test_compare_splits_each_arms_seeds_over_two_devices_with_the_results_of_one():
    """Two host devices in a fresh interpreter: an arm's seeds are split over both (the default
    mesh), and every curve and final parameter equals the same arm on one device."""
    code = """
        import json, jax, numpy as np, ppo_jax
        from ppo_jax.runtime import compare as cmp
        from ppo_jax.runtime.distributed import run_mesh
        params, summarise = [], cmp.arm_result
        def keep(objective, cfg, outputs, *rest):  # every arm's final parameters [S, ...], flattened
            params.append(np.concatenate([np.reshape(x, (4, -1)) for x in jax.tree.leaves(outputs[1])], 1).tolist())
            return summarise(objective, cfg, outputs, *rest)
        cmp.arm_result = keep
        cfg = ppo_jax.default_config(num_envs=2, num_steps=16, total_timesteps=128)
        two = cmp.compare(cfg, ("a2c",), seeds=(0, 1, 2, 3))
        one = cmp.compare(cfg, ("a2c",), seeds=(0, 1, 2, 3), mesh=run_mesh(jax.devices()[:1]))
        print(json.dumps({"devices": cmp.arm_mesh(4).size, "odd": cmp.arm_mesh(3).size, "params": params,
                          "returns": [two[0].returns.tolist(), one[0].returns.tolist()]}))
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["odd"] == 1  # 3 seeds do not divide over 2 devices: one
    two, one = (np.asarray(p) for p in out["params"])
    assert np.ptp(one, axis=0).max() > 0  # the seeds differ: not one run copied
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)  # float32 rounding: a device computes 2 runs, not 4
    np.testing.assert_allclose(*(np.asarray(r, float) for r in out["returns"]), rtol=1e-5)


def _csv_columns(path: Path) -> dict[str, list[str]]:
    rows = path.read_text().splitlines()
    header, values = rows[0].split(","), [r.split(",") for r in rows[1:]]
    return {name: [v[i] for v in values] for i, name in enumerate(header)}


def test_a_stopped_compare_resumed_gives_every_arm_the_uninterrupted_results(whole, tmp_path, capsys, monkeypatch):
    """2 objectives x 2 seeds, 4 updates, a checkpoint every 2: Ctrl-C while the second arm trains
    stops it at update 2 (exit 130, the resume line); --resume keeps the finished arm's files,
    resumes the stopped one, and every arm ends with the uninterrupted compare's parameters and
    metrics. Each arm's folder is a training run's: eval reads it, its policy file loads."""
    import ppo_jax.runtime.compare as cmp

    flags, (whole, _, _), stopped = COMPARE_FLAGS, whole, tmp_path / "stopped"
    real, arms = cmp.execute, []

    def stop_in_second_arm(run, record, notify, stop):  # as if Ctrl-C came while the second arm compiled
        arms.append(run.out.name)
        stop.requested = stop.requested or len(arms) == 2
        return real(run, record, notify, stop=stop)

    with monkeypatch.context() as patch:
        patch.setattr(cmp, "execute", stop_in_second_arm)
        assert cli.main([*flags, "--out", str(stopped), "--quiet"]) == 130
    out = capsys.readouterr().out
    assert (
        arms == ["clip", "a2c"] and f"stopped a2c at update 2/4; resume with: ppo-jax compare --resume {stopped}" in out
    )
    assert not (stopped / "compare.json").exists() and (stopped / "arms" / "clip" / "summary.json").exists()
    assert sorted(p.name for p in (stopped / "arms" / "a2c" / "checkpoints").iterdir()) == ["2"]
    finished = (stopped / "arms" / "clip" / "summary.json").read_text()

    assert cli.main(["compare", "--resume", str(stopped), "--seeds", "3"]) == 2  # a resume keeps its seeds
    assert "--seeds" in capsys.readouterr().err
    assert cli.main(["compare", "--resume", str(stopped), "--quiet"]) == 0
    assert (stopped / "arms" / "clip" / "summary.json").read_text() == finished  # the finished arm is kept
    a, b = (json.loads((d / "compare.json").read_text()) for d in (whole, stopped))
    rows = [{r["objective"]: r for r in record["objectives"]} for record in (a, b)]
    for objective in ("clip", "a2c"):
        assert rows[0][objective]["params_sha256"] == rows[1][objective]["params_sha256"]
        assert len(set(rows[0][objective]["params_sha256"])) == 2  # the seeds differ
        assert rows[0][objective]["final_returns"] == rows[1][objective]["final_returns"]
        assert rows[1][objective]["run_dir"] == f"arms/{objective}"
        arm, twin = whole / "arms" / objective, stopped / "arms" / objective
        assert _csv_columns(arm / "metrics.csv") == _csv_columns(twin / "metrics.csv")
        summaries = [json.loads((d / "summary.json").read_text()) for d in (arm, twin)]
        assert summaries[0]["params_sha256"] == summaries[1]["params_sha256"]
        assert summaries[0]["seeds"] == [0, 1] and summaries[0]["num_updates"] == 4
    assert rows[0]["clip"]["params_sha256"] != rows[0]["a2c"]["params_sha256"]

    assert cli.main(["eval", str(stopped / "arms" / "a2c"), "--episodes", "2", "--quiet"]) == 0
    assert json.loads((stopped / "arms" / "a2c" / "eval.json").read_text())["update"] == 4
    policy = ppo_jax.load_policy(stopped / "arms" / "clip" / "policy-seed1.npz")
    assert np.asarray(policy.act(np.zeros((3, 4), np.float32))).shape == (3,)
