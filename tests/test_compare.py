"""Objective choice in the training loop and the `compare` command."""

from __future__ import annotations

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


def test_compare_trains_every_objective_and_writes_a_table(tmp_path, capsys):
    results = compare(ppo_jax.default_config(**TINY), seeds=(0, 1))
    assert [r.objective for r in results] == ["clip", "kl_penalty", "reinforce", "a2c", "trpo"]
    for r in results:
        assert r.returns.shape == (r.config.num_updates, 2) and r.final_returns.shape == (2,)
        assert r.ci_low <= r.iqm <= r.ci_high
    args = ["compare", "--seeds", "2", "--objectives", "clip,a2c", "--out", tmp_path]
    args += ["--num-envs", "2", "--num-steps", "16", "--num-epochs", "2", "--num-minibatches", "2"]
    assert cli.main([str(a) for a in [*args, "--total-timesteps", "128"]]) == 0
    report = json.loads((tmp_path / "compare.json").read_text())
    rows = {row["objective"]: row for row in report["objectives"]}
    assert sorted(rows) == ["a2c", "clip"]
    iqms = [row["iqm"] for row in report["objectives"]]
    assert iqms == sorted(iqms, reverse=True)  # ranked by IQM, best first
    assert rows["a2c"]["num_epochs"] == 1 and rows["clip"]["num_epochs"] == 2
    assert (tmp_path / "compare.png").stat().st_size > 0
    out, err = capsys.readouterr()
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
