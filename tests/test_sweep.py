"""Sweeps: parsing and validation before any compile, one compiled program for all batches, runs
equal to `ppo-jax train --seed s`, every traced field taking effect, and the sweep folder."""

import csv
import json
import math
import re

import jax
import numpy as np
import pytest

from ppo_jax.commands import main as cli
from ppo_jax.commands import sweep as sweep_cli
from ppo_jax.config import TRACED_FIELDS, ConfigError, default_config
from ppo_jax.core.objectives import OBJECTIVES
from ppo_jax.engine.train import make_train_batch
from ppo_jax.runtime import executor, stats
from ppo_jax.runtime.runners import raw_keys, typed_keys
from ppo_jax.runtime.signals import StopRequest
from ppo_jax.runtime.sweeps import (
    CompileCounter,
    Distribution,
    check_configurations,
    choose_max_parallel,
    grid_configurations,
    make_configurations,
    parse_grid,
    parse_random,
    plan_sweep,
    resolve_seeds,
    run_hyperparams,
    sample_configurations,
    sweep,
)

jax.config.update("jax_numpy_rank_promotion", "raise")

TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2)
TINY_FLAGS = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "2"]


def tiny(env="CartPole-v1", updates=3, **overrides):
    return default_config(env, **TINY, total_timesteps=updates * 32, **overrides)


# ---------------------------------------------------------------------------------------------
# Parsing and validation: clear ConfigErrors, nothing compiled


def test_parse_grid_and_product():
    grid = parse_grid(["lr=1e-4,3e-4, 1e-3", "clip_eps=0.1,0.2"])
    assert grid == {"lr": (1e-4, 3e-4, 1e-3), "clip_eps": (0.1, 0.2)}
    points = grid_configurations(grid)
    assert len(points) == 6
    assert points[0] == {"lr": 1e-4, "clip_eps": 0.1} and points[1] == {"lr": 1e-4, "clip_eps": 0.2}


@pytest.mark.parametrize(
    "items, field, words",
    [
        (["num_envs=4,8"], "num_envs", ["static", "vmapped", "separate sweep per value", "--num-envs 4"]),
        (["hidden_sizes=64"], "hidden_sizes", ["static", "separate sweep"]),
        (["env=Acrobot-v1"], "env", ["static", "separate sweep"]),
        (["lrr=1e-3"], "lrr", ["unknown field", "did you mean lr"]),
        (["lr"], "grid", ["NAME=VALUES"]),
        (["=1e-3"], "grid", ["NAME=VALUES"]),
        (["lr="], "grid", ["NAME=VALUES"]),
        (["lr=1e-3,,3e-3"], "lr", ["empty value"]),
        (["lr=fast"], "lr", ["'fast' is not a number"]),
        (["lr=1e-3", "lr=3e-3"], "lr", ["given twice"]),
    ],
)
def test_parse_grid_errors(items, field, words):
    with pytest.raises(ConfigError) as err:
        parse_grid(items)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_parse_random_and_sampling():
    dists = parse_random(["lr=loguniform(1e-5, 1e-2)", "ent_coef=uniform(0,0.05)"])
    assert dists == {"lr": Distribution("loguniform", 1e-5, 1e-2), "ent_coef": Distribution("uniform", 0.0, 0.05)}
    points = sample_configurations(dists, 200, seed=3)
    assert points == sample_configurations(dists, 200, seed=3)
    lr = np.array([p["lr"] for p in points])
    ent = np.array([p["ent_coef"] for p in points])
    assert (lr >= 1e-5).all() and (lr < 1e-2).all() and (ent >= 0).all() and (ent < 0.05).all()
    # log-uniform: about a third of the draws in each decade
    assert 0.2 < np.mean(lr < 1e-4) < 0.45 and 0.2 < np.mean(lr > 1e-3) < 0.45


@pytest.mark.parametrize(
    "items, field, words",
    [
        (["lr=normal(0,1)"], "lr", ["uniform(LOW,HIGH)"]),
        (["lr=uniform(1e-3)"], "lr", ["uniform(LOW,HIGH)"]),
        (["num_steps=uniform(8,16)"], "num_steps", ["static"]),
    ],
)
def test_parse_random_errors(items, field, words):
    with pytest.raises(ConfigError) as err:
        parse_random(items)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        (dict(), "grid", ["empty"]),
        (dict(random={"lr": Distribution("loguniform", 0.0, 1e-2)}, samples=4), "lr", ["LOW > 0"]),
        (dict(random={"gamma": Distribution("uniform", 0.9, 1.1)}, samples=4), "gamma", ["1.1", "[0, 1]"]),
        (dict(random={"lr": Distribution("uniform", 1e-3, 1e-4)}, samples=4), "lr", ["LOW must be less"]),
        (dict(random={"lr": Distribution("uniform", 1e-4, 1e-3)}), "samples", ["--samples"]),
        (dict(grid={"lr": (1e-3,)}, samples=3), "samples", ["--random"]),
        (
            dict(grid={"lr": (1e-3,)}, random={"lr": Distribution("uniform", 1e-4, 1e-3)}, samples=2),
            "lr",
            ["both"],
        ),
    ],
)
def test_make_configurations_errors(kwargs, field, words):
    with pytest.raises(ConfigError) as err:
        make_configurations(**kwargs)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_grid_times_random_samples():
    points = make_configurations({"clip_eps": (0.1, 0.2)}, {"lr": Distribution("uniform", 1e-4, 1e-3)}, 3, seed=0)
    assert len(points) == 6
    assert [p["clip_eps"] for p in points] == [0.1, 0.1, 0.1, 0.2, 0.2, 0.2]
    assert [p["lr"] for p in points[:3]] == [p["lr"] for p in points[3:]]


@pytest.mark.parametrize(
    "grid, field, words",
    [
        ({}, "grid", ["empty"]),
        ({"lr": []}, "lr", ["empty list"]),
        ({"lr": [1e-3, 1e-3]}, "lr", ["listed twice"]),
        ({"lr": [-1e-3, 1e-3]}, "lr", ["-0.001", "outside the allowed range (0, inf]"]),
        ({"gamma": [0.9, 1.5]}, "gamma", ["1.5", "[0, 1]"]),
        ({"clip_eps": [0.0]}, "clip_eps", ["outside"]),
        ({"num_steps": [16, 32]}, "num_steps", ["static", "separate sweep"]),
        ({"bogus": [1.0]}, "bogus", ["unknown field"]),
        ({"init_log_std": [0.0, 1.0]}, "init_log_std", ["change nothing", "discrete"]),
        ({"kl_coef": [0.1, 1.0]}, "kl_coef", ["change nothing", "kl_penalty"]),
        ({"lr": "1e-3"}, "lr", ["list of numbers"]),
    ],
)
def test_plan_rejects_bad_sweeps_before_compiling(grid, field, words):
    with CompileCounter() as counter, pytest.raises(ConfigError) as err:
        plan_sweep(tiny(), grid, seeds=2)
    assert "sweep_chunk" not in counter.names  # (resolving the env may compile tiny helpers)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_plan_rejects_bad_seeds_and_parallel():
    config = tiny()
    for seeds in (0, [], [1, 1], [-1], [1.5]):
        with pytest.raises(ConfigError) as err:
            plan_sweep(config, {"lr": [1e-3]}, seeds)
        assert err.value.field == "seeds"
    with pytest.raises(ConfigError) as err:
        plan_sweep(config, {"lr": [1e-3]}, 2, max_parallel=0)
    assert err.value.field == "max_parallel"
    with pytest.raises(ConfigError):
        check_configurations(config, [{"lr": True}])


def test_seeds_and_run_order():
    config = tiny(seed=5)
    assert resolve_seeds(config, 3) == (5, 6, 7)
    assert resolve_seeds(config, [9, 2]) == (9, 2)
    hp = run_hyperparams(config, [{"lr": 1e-3}, {"lr": 2e-3, "gamma": 0.9}], num_seeds=3)
    # run r = c * S + s: configuration-major, seed-minor; unswept fields keep the config's value
    np.testing.assert_array_equal(hp.lr, np.float32([1e-3, 1e-3, 1e-3, 2e-3, 2e-3, 2e-3]))
    np.testing.assert_array_equal(hp.gamma, np.float32([0.99, 0.99, 0.99, 0.9, 0.9, 0.9]))
    assert hp.lr.dtype == np.float32 and hp.clip_eps.shape == (6,)


def test_choose_max_parallel():
    assert choose_max_parallel(64, run_bytes=1 << 20, memory_bytes=1 << 40) == 64
    # 10 fit in half of the memory: 64 runs become 7 even batches of 10 (not 6 x 10 + 4)
    assert choose_max_parallel(64, run_bytes=100, memory_bytes=2000) == 10
    assert choose_max_parallel(65, run_bytes=100, memory_bytes=2000) == 10
    assert choose_max_parallel(61, run_bytes=100, memory_bytes=2000) == 9  # 7 batches of <= 9
    assert choose_max_parallel(8, run_bytes=1 << 30, memory_bytes=1) == 1
    plan = plan_sweep(tiny(), {"lr": [1e-3, 2e-3]}, 3)
    assert plan.max_parallel == 6 and plan.num_batches == 1


# ---------------------------------------------------------------------------------------------
# Compiled sweeps


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def test_sweep_cli_runs_equal_ppo_jax_train(tmp_path, capsys):
    """`ppo-jax sweep` run (h, s) is `ppo-jax train --seed s` with h; 4 runs in batches of 3
    (last one padded) through one compiled program."""
    flags = [*TINY_FLAGS, "--total-timesteps", str(3 * 32)]
    tb = ["--tensorboard"] if _has_tensorboardx() else []
    argv = [*flags, "--seed", "3", "--seeds", "2", "--grid", "lr=1e-3,3e-3", "--max-parallel", "3"]
    assert sweep_cli.main([*argv, "--out", str(tmp_path / "sweep"), *tb]) == 0
    out = capsys.readouterr().out
    assert "compiled 1 program in" in out and "2 batches of 3" in out
    assert "IQM" in out and "95% CI" in out and "rank" in out

    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["compiles"] == 1 and record["num_batches"] == 2 and record["max_parallel"] == 3
    assert record["swept"] == ["lr"] and record["seeds"] == [3, 4] and record["num_runs"] == 4
    for key in ("wall_seconds", "compile_seconds", "env_steps_per_second", "peak_rss_bytes"):
        assert record[key] > 0
    ranked = record["configurations"]
    assert [c["rank"] for c in ranked] == [1, 2]
    for c in ranked:
        assert set(c) >= {"hyperparams", "final_returns", "iqm", "ci_low", "ci_high", "auc"}
        assert c["ci_low"] <= c["iqm"] <= c["ci_high"]
        assert c["iqm"] == pytest.approx(stats.iqm(c["final_returns"]))
    for name in ("curves.png", "sensitivity_lr.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 1000

    # the run with lr=3e-3 and seed 4, trained alone by `ppo-jax train`
    assert cli.main(["train", *flags, "--seed", "4", "--lr", "3e-3", "--quiet", "--out", str(tmp_path / "train")]) == 0
    alone = _read_csv(tmp_path / "train" / "metrics.csv")
    run_dir = tmp_path / "sweep" / "runs" / "c01_lr=0.003" / "seed4"
    inside = _read_csv(run_dir / "metrics.csv")
    assert len(inside["update"]) == 3 and set(inside["seed"]) == {4.0}
    for name in set(alone) & set(inside):
        np.testing.assert_allclose(inside[name], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)
    if tb:
        assert list(run_dir.glob("events.out.tfevents.*"))


def _has_tensorboardx():
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True))


def _run_params(result, c, s):
    return [leaf[c, s] for leaf in jax.tree.leaves(result.params)]


# Values that differ from the defaults enough to matter after one update.
CLIP_VARIANTS = {
    "lr": 1e-3,
    "gamma": 0.9,
    "gae_lambda": 0.5,
    "clip_eps": 1e-4,  # after one update ratios are within 1e-3 of 1: only a tiny range binds
    "ent_coef": 1.0,  # the entropy gradient vanishes at the near-uniform initial policy: small effect
    "vf_coef": 2.0,
    "max_grad_norm": 0.001,
    "adam_eps": 0.1,  # larger than the gradient entries: Adam's step shrinks
}
# the first updates move the policy by a KL of ~1e-5, below any usual target (beta halves either
# way); a tiny target makes beta double instead
KL_VARIANTS = {"kl_coef": 5.0, "kl_target": 1e-9}
CONTINUOUS_VARIANTS = {"init_log_std": -1.0}
# the trust region's radius scales TRPO's natural-gradient step
TRPO_VARIANTS = {"max_kl": 1e-4}


def test_every_traced_field_is_covered_below():
    covered = set(CLIP_VARIANTS) | set(KL_VARIANTS) | set(CONTINUOUS_VARIANTS) | set(TRPO_VARIANTS)
    declared = {f.name for o in OBJECTIVES.values() for f in o.fields if f.traced}  # the objectives' own
    assert covered == set(TRACED_FIELDS) | declared


def test_sweep_help_names_every_sweepable_field():
    listed = re.search(r"Only traced fields can be swept \(([^)]*)\)", " ".join(sweep_cli.EPILOG.split())).group(1)
    assert set(listed.split(", ")) == set(TRACED_FIELDS)


def test_raw_keys_round_trip_keeps_each_key_and_its_implementation():
    tree = {"rbg": jax.random.key(3, impl="rbg"), "fry": jax.random.split(jax.random.key(1), 4), "x": np.ones(2)}
    host = jax.tree.map(np.asarray, raw_keys(tree))  # NumPy holds no key types
    assert host["fry"].shape == (4, 2) and host["fry"].dtype == np.uint32
    back = typed_keys(host, jax.eval_shape(lambda: tree))
    for name in ("rbg", "fry"):
        assert back[name].dtype == tree[name].dtype
        np.testing.assert_array_equal(jax.random.key_data(back[name]), jax.random.key_data(tree[name]))
    np.testing.assert_array_equal(back["x"], tree["x"])


def test_a_sweep_carries_keys_an_env_keeps_in_its_state_between_chunks(tmp_path, key_in_state_env):
    """Chunks of one update each (a checkpoint after every update): the env's typed key crosses
    the host as raw key data and comes back the same key, so the run ends as the single program
    of `ppo-jax train` does."""
    env, config = key_in_state_env, tiny(updates=3, env="CartPole-v1")
    result = sweep(config, {"lr": [1e-3]}, [5], env=env, out=tmp_path / "s", checkpoint_every=1, bootstrap_reps=50)
    alone = jax.jit(make_train_batch(config.replace(seed=5, lr=1e-3), env=env, env_params=env.default_params))(
        jax.vmap(jax.random.key)(np.asarray([5], np.uint32))
    )
    single = [leaf[0] for leaf in jax.tree.leaves(alone.state.params)]
    assert _max_diff(single, _run_params(result, 0, 0)) < 1e-5
    returns = result.metrics["episode_return"][:, 0, 0]
    np.testing.assert_allclose(returns, np.asarray(alone.metrics["episode_return"])[:, 0], rtol=1e-5)


def _check_each_field_changes_params(config, variants, seeds):
    """Configurations: the base, an identical control, then one per field. Each field's run must
    end with different parameters from the base; the control with the same ones."""
    configurations = [{}, {}, *({name: value} for name, value in variants.items())]
    events = []
    result = sweep(config, configurations, seeds, callback=events.append, bootstrap_reps=200)
    assert result.compiles == 1 and result.num_batches == 1
    assert events[-1].runs_done == events[-1].num_runs == len(configurations) * len(seeds)
    assert events[-1].updates_done == events[-1].total_updates
    base = _run_params(result, 0, 0)
    assert _max_diff(base, _run_params(result, 1, 0)) == 0.0
    for c, name in enumerate(variants, start=2):
        assert _max_diff(base, _run_params(result, c, 0)) > 0.0, name  # the control differs by exactly 0
    return result


def test_each_clip_field_changes_params_and_runs_equal_single_training():
    config = tiny(updates=1)
    result = _check_each_field_changes_params(config, CLIP_VARIANTS, seeds=[0, 7])
    assert result.metrics["episode_return"].shape == (1, 2 + len(CLIP_VARIANTS), 2)
    # run (lr variant, seed 7) equals the single-run program `ppo-jax train` uses
    c = 2 + list(CLIP_VARIANTS).index("lr")
    alone = jax.jit(make_train_batch(config.replace(lr=CLIP_VARIANTS["lr"], seed=7)))(
        jax.vmap(jax.random.key)(np.asarray([7], np.uint32))
    )
    single = [leaf[0] for leaf in jax.tree.leaves(alone.state.params)]
    assert _max_diff(single, _run_params(result, c, 1)) < 1e-5
    # summaries are the plain statistics of the per-seed final returns
    for s in result.summaries:
        finite = s.final_returns[np.isfinite(s.final_returns)]
        if finite.size:  # a seed may finish no episode within one short update
            assert s.iqm == pytest.approx(stats.iqm(finite)) and s.final_return_mean == pytest.approx(finite.mean())
            assert s.ci_low <= s.iqm <= s.ci_high and math.isfinite(s.auc)
        else:
            assert math.isnan(s.iqm) and math.isnan(s.ci_low) and math.isnan(s.auc)
        assert s.nonfinite == 0
    assert sorted(result.ranking) == list(range(len(result.configurations)))


def test_kl_penalty_fields_change_params():
    # kl_target adapts beta at the end of update 1, so it shows in the parameters after update 2
    _check_each_field_changes_params(tiny(updates=2, objective="kl_penalty"), KL_VARIANTS, seeds=[0])


def test_trpo_fields_change_params():
    _check_each_field_changes_params(tiny(updates=1, objective="trpo"), TRPO_VARIANTS, seeds=[0])


def test_init_log_std_changes_params_on_a_continuous_env():
    # envs.env_action and envs.normalize broadcast [N, D] against [D]: allowed here until they
    # broadcast explicitly
    with jax.numpy_rank_promotion("allow"):
        _check_each_field_changes_params(tiny("Pendulum-v1", updates=1), CONTINUOUS_VARIANTS, seeds=[0])


# ---------------------------------------------------------------------------------------------
# Checkpoints, stop and resume


class _StopAtOnce(StopRequest):
    """A stop requested before the first chunk, as if Ctrl-C came while compiling."""

    def __enter__(self):
        super().__enter__()
        self.requested = True
        return self


def test_a_stopped_sweep_resumed_gives_every_run_the_uninterrupted_parameters(tmp_path, capsys, monkeypatch):
    """2 configurations x 2 seeds, 4 updates, a checkpoint every 2: stopped at update 2 (exit 130,
    the message says how to resume), resumed to the end, every run ends with the parameters and
    metrics of the uninterrupted sweep."""
    flags = [*TINY_FLAGS, "--total-timesteps", str(4 * 32), "--grid", "lr=1e-3,3e-3", "--seeds", "2"]
    flags += ["--checkpoint-every", "2", "--bootstrap-reps", "50", "--quiet"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert sweep_cli.main([*flags, "--out", str(whole)]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(executor, "StopRequest", _StopAtOnce)
        assert sweep_cli.main([*flags, "--out", str(stopped)]) == 130
    out = capsys.readouterr().out
    assert "stopped at update 2/4" in out and f"ppo-jax sweep --resume {stopped}" in out
    assert not (stopped / "sweep.json").exists()
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["2"]

    argv = ["--resume", str(stopped), "--quiet"]
    assert sweep_cli.main([*argv, "--grid", "lr=1"]) == 2  # a resumed sweep keeps its configurations
    assert "--grid" in capsys.readouterr().err
    assert sweep_cli.main(argv) == 0
    a, b = (json.loads((d / "sweep.json").read_text()) for d in (whole, stopped))
    assert b["resumed_at_update"] == 2 and a["resumed_at_update"] is None
    by_index = [{c["index"]: c for c in r["configurations"]} for r in (a, b)]
    for c in range(2):
        assert by_index[0][c]["params_sha256"] == by_index[1][c]["params_sha256"]
        assert len(set(by_index[0][c]["params_sha256"])) == 2  # the seeds differ
    assert by_index[0][0]["params_sha256"] != by_index[0][1]["params_sha256"]  # so do the configurations
    for run in sorted(whole.glob("runs/*/seed*")):
        twin = stopped / run.relative_to(whole)
        assert _read_csv(run / "metrics.csv").keys() == _read_csv(twin / "metrics.csv").keys()
        for name, column in _read_csv(run / "metrics.csv").items():
            np.testing.assert_array_equal(column, _read_csv(twin / "metrics.csv")[name], err_msg=name)
        sha = json.loads((run / "summary.json").read_text())["params_sha256"]
        assert sha == json.loads((twin / "summary.json").read_text())["params_sha256"]
