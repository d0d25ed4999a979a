"""Objective choice in the training loop and the `compare` command."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import ppo_jax
from ppo_jax.commands import main as cli
from ppo_jax.runtime.compare import compare, objective_config

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
