"""Parts named by reference (`ppo_jax.plugins`): resolving, recording, refusing what cannot be
rebuilt; the example plug-ins checked against independent references."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from examples import dual_clip, layernorm_family, target_env
from ppo_jax import plugins
from ppo_jax.commands import main as cli
from ppo_jax.core.losses import LossInputs
from ppo_jax.errors import ConfigError
from ppo_jax.runtime.driver import run

TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1, total_timesteps=64)


def test_reference_of_finds_shipped_names_and_module_attributes():
    from ppo_jax.core.objectives import OBJECTIVES

    assert plugins.reference_of(OBJECTIVES["trpo"], OBJECTIVES) == "trpo"
    assert plugins.reference_of(dual_clip.OBJECTIVE) == "examples.dual_clip:OBJECTIVE"
    assert plugins.reference_of(target_env.make) == "examples.target_env:make"
    assert plugins.reference_of(object()) is None


@pytest.mark.parametrize(
    "kind,ref,words",
    [
        ("objective", "no_such_package.mod:OBJ", ["cannot import no_such_package.mod:OBJ", "No module"]),
        ("network", "examples.dual_clip:NOPE", ["examples.dual_clip:NOPE", "no attribute 'NOPE'"]),
        ("env", "examples.target_env:nope", ["examples.target_env:nope", "no attribute"]),
    ],
)
def test_an_unimportable_reference_is_one_line_naming_it(kind, ref, words, tmp_path, capsys, no_compiles):
    with no_compiles():
        code = cli.main(["train", f"--{kind}", ref, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"ppo-jax: error: {kind}:")
    assert all(w in err for w in words)


def test_objects_with_a_reference_are_recorded_by_it(tmp_path):
    config = ppo_jax.default_config(**TINY)
    env, params = target_env.make(12)
    summary = run(config, out=tmp_path / "run", objective=dual_clip.OBJECTIVE, env=env, env_params=params)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["objective"] == "examples.dual_clip:OBJECTIVE" and record["dual_clip_c"] == 3.0
    # the factory's default params differ from the ones given: the env object cannot be recorded
    assert record["unrecorded"] == ["env: TargetEnv env object"]
    assert summary["policies_exported"]


def test_an_object_without_a_reference_is_reported_and_refused_by_eval(tmp_path, capsys):
    family = layernorm_family.LayerNormPolicy(layernorm_family.ActorCritic(2, True, 1, 8))  # made here: no reference
    messages = []
    out = tmp_path / "run"
    run(ppo_jax.default_config(**TINY), out=out, network=family, notify=lambda kind, msg: messages.append((kind, msg)))
    assert [k for k, _ in messages].count("warning") == 1 and "LayerNormPolicy" in messages[0][1]
    record = json.loads((out / "config.json").read_text())
    assert record["unrecorded"] == ["network: LayerNormPolicy policy family object"]
    assert cli.main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network: LayerNormPolicy" in err and "corrupted" not in err
    assert cli.main(["train", "--resume", str(out)]) == 2
    assert "no importable reference" in capsys.readouterr().err


def test_a_run_folder_whose_plug_in_is_gone_names_the_reference(tmp_path, capsys, monkeypatch):
    package = tmp_path / "gone_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "obj.py").write_text("from examples.dual_clip import OBJECTIVE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    config = ppo_jax.default_config(objective="gone_pkg.obj:OBJECTIVE", **TINY)
    run(config, out=out)
    monkeypatch.delitem(sys.modules, "gone_pkg.obj")
    monkeypatch.delitem(sys.modules, "gone_pkg")
    (package / "obj.py").unlink()
    for argv in (["eval", str(out)], ["train", "--resume", str(out)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot import gone_pkg.obj:OBJECTIVE" in err and "corrupted" not in err


def test_library_save_and_load_rebuild_a_plug_in_run(tmp_path):
    from ppo_jax.runtime.checkpoint import load, save

    config = ppo_jax.default_config(network="examples.layernorm_family:FAMILY", ln_width=8, **TINY)
    result = jax.jit(ppo_jax.make_train(config))(jax.random.key(0))
    save(tmp_path / "ckpt", result.state, config)
    state, loaded = load(tmp_path / "ckpt")
    assert loaded == config and loaded.ln_width == 8
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(result.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


class NoFinalObservation:
    """CartPole whose step leaves info["final_observation"] out (and overrides gymnax's step)."""

    def __init__(self):
        import gymnax

        self.inner, self.default_params = gymnax.make("CartPole-v1")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self.inner.step(key, state, action, params)
        return obs, state, reward, terminated, truncated, {}


def test_an_env_without_final_observation_is_refused_at_trace_time():
    train = ppo_jax.make_train(ppo_jax.default_config(**TINY), env=NoFinalObservation())
    with pytest.raises(ConfigError, match=r"env: NoFinalObservation.step returns no info\['final_observation'\]"):
        jax.eval_shape(train, jax.random.key(0))


def dual_clip_reference(ratio, adv, eps, c):
    """−mean of max(min(ρA, clip(ρ)A), cA) for A < 0, min(ρA, clip(ρ)A) else: a NumPy loop."""
    total = 0.0
    for r, a in zip(ratio, adv, strict=True):
        v = min(r * a, min(max(r, 1 - eps), 1 + eps) * a)
        total += max(v, c * a) if a < 0 else v
    return -total / len(ratio)


def test_dual_clip_surrogate_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    ratio, adv = np.exp(rng.normal(0, 1.0, 64)), rng.normal(0, 1, 64)
    got = dual_clip.dual_clip_surrogate(jnp.log(ratio), jnp.zeros(64), jnp.asarray(adv), 0.2, 3.0)
    assert float(got) == pytest.approx(dual_clip_reference(ratio, adv, 0.2, 3.0), rel=1e-5)
    big = ratio > 3.0 / 1.0  # where ρ > c and A < 0 the bound c·A is active: no gradient
    grad = jax.grad(lambda lp: dual_clip.dual_clip_surrogate(lp, jnp.zeros(64), jnp.asarray(adv), 0.2, 3.0))(
        jnp.log(ratio)
    )
    assert np.all(np.asarray(grad)[big & (adv < 0)] == 0.0)


def test_dual_clip_loss_reads_its_traced_field():
    inputs = LossInputs(*(jnp.zeros(8) for _ in range(5)), -jnp.ones(8), jnp.zeros(8))
    hp = ppo_jax.default_config(objective="examples.dual_clip:OBJECTIVE", dual_clip_c=2.0).hyperparams()
    assert float(hp.dual_clip_c) == 2.0
    loss, metrics = dual_clip.OBJECTIVE.loss(inputs, hp, (), ppo_jax.default_config())
    assert set(metrics) == {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"}


def test_target_env_stepped_by_hand_cuts_episodes_at_its_time_limit():
    env, params = target_env.make(3)
    obs, state = env.reset(jax.random.key(0), params)
    x, goal = float(obs[0]), float(obs[1])
    for t in range(3):
        obs, state, reward, terminated, truncated, info = env.step(jax.random.key(t + 1), state, 2, params)
        x = min(x + 0.1, 1.0)
        assert float(reward) == pytest.approx(1 - abs(x - goal) / 2, abs=1e-6)
        assert not bool(terminated) and bool(truncated) == (t == 2)
        np.testing.assert_allclose(np.asarray(info["final_observation"]), [x, goal], atol=1e-6)
