"""Checkpoints, exact resume, SIGINT/SIGKILL handling, evaluation, policy export, failure exits."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import ppo_jax
from ppo_jax.commands import main as cli
from ppo_jax.engine.evaluate import Acting, evaluate, policy_action
from ppo_jax.engine.train import init_state, make_context
from ppo_jax.envs import normalize
from ppo_jax.runtime.checkpoint import CheckpointError, RunCheckpoints, check_compatible, config_from_meta
from ppo_jax.runtime.planning import refuse_used_run_dir

# 10 updates of 2 envs x 16 steps: compiles and runs in seconds.
TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "2"]
TINY_STEPS = ["--total-timesteps", str(2 * 16 * 10)]


def run_cli(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """An uninterrupted 10-update run with a checkpoint every 2 updates (all kept)."""
    out = tmp_path_factory.mktemp("full")
    assert run_cli("train", *TINY, *TINY_STEPS, "--seeds", "2", "--checkpoint-every", "2", "--out", out, "--quiet") == 0
    return out


def interrupted_copy(full: Path, run: Path, interrupted_at: int) -> Path:
    """`run`: the folder a crash right after checkpoint `interrupted_at` of the finished `full` leaves behind."""
    shutil.copytree(full, run)
    for name in ("summary.json", "metrics.csv", "curve.png"):
        (run / name).unlink()
    for ckpt in (run / "checkpoints").iterdir():
        if ckpt.name.isdigit() and int(ckpt.name) > interrupted_at:
            shutil.rmtree(ckpt)
    return run


@pytest.mark.parametrize("interrupted_at", [2, 4, 8])
def test_resume_after_interruption_is_bit_identical(full_run, tmp_path, interrupted_at):
    run = interrupted_copy(full_run, tmp_path / "run", interrupted_at)
    assert run_cli("train", "--resume", run, "--quiet") == 0
    assert summary(run)["params_sha256"] == summary(full_run)["params_sha256"]
    assert (run / "metrics.csv").read_text() == (full_run / "metrics.csv").read_text()


def test_resume_of_an_env_that_keeps_a_key_in_its_state_is_bit_identical(tmp_path, key_in_state_env):
    # navix keeps a typed PRNG key in its env state: the checkpoint must carry it so that the
    # resumed run draws the same rewards as the uninterrupted one
    config = ppo_jax.default_config(num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1, total_timesteps=96)
    options = dict(env=key_in_state_env, handle_signals=False)
    full = ppo_jax.run(config, out=tmp_path / "full", seeds=2, checkpoint_every=2, **options)
    run = interrupted_copy(tmp_path / "full", tmp_path / "run", 2)
    resumed = ppo_jax.run(resume=run, **options)
    assert resumed["params_sha256"] == full["params_sha256"]
    assert (run / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()


def test_checkpoint_holds_optimizer_count_and_normalisation_stats(tmp_path):
    out = tmp_path / "pendulum"
    argv = ["train", "--env", "Pendulum-v1", *TINY, "--total-timesteps", "128", "--checkpoint-every", "1"]
    assert run_cli(*argv, "--keep", "10", "--out", out, "--quiet") == 0
    config = ppo_jax.default_config("Pendulum-v1", num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2)
    config = config.replace(total_timesteps=128)
    store = RunCheckpoints(out)
    ctx = make_context(config)
    first, _ = store.restore(ctx, update=1)
    last, meta = store.restore(ctx, update=4)
    assert meta["update"] == 4 and int(last.state.update[0]) == 4
    # optax counts one step per minibatch: updates * epochs * minibatches
    counts = [int(np.asarray(x)[0]) for x in jax.tree.leaves(last.state.opt_state) if np.asarray(x).dtype == np.int32]
    assert counts and all(c == 4 * 2 * 2 for c in counts)
    # observation and reward statistics change between checkpoints and come back as saved
    assert not np.allclose(first.state.env.obs_stats.mean, last.state.env.obs_stats.mean)
    assert float(last.state.env.obs_stats.count[0]) > float(first.state.env.obs_stats.count[0]) > 1
    assert float(last.state.env.reward_scaler.stats.count[0]) > 1
    assert last.metrics["env_steps"].shape == (4, 1)


def _start(out: Path, *extra: str, updates: int = 400, every: int | None = 20) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ppo_jax.commands.main", "train", *TINY, "--total-timesteps", str(2 * 16 * updates)]
    argv += ["--checkpoint-every", str(every)] if every else []
    argv += ["--out", str(out), "--quiet", *extra]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    argv = ["train", *TINY, "--total-timesteps", str(2 * 16 * 400), "--checkpoint-every", "20", "--out", out]
    assert run_cli(*argv, "--quiet") == 0
    return out


def test_sigkill_then_resume_matches_uninterrupted(long_reference, tmp_path):
    out = tmp_path / "killed"
    proc = _start(out)
    _wait_for(out / "checkpoints" / "40", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    assert run_cli("train", "--resume", out, "--quiet") == 0
    assert summary(out)["params_sha256"] == summary(long_reference)["params_sha256"]
    assert (out / "metrics.csv").read_text() == (long_reference / "metrics.csv").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, or a scheduler preempting
def test_stop_signal_saves_a_resumable_checkpoint(long_reference, tmp_path, signum):
    out = tmp_path / "interrupted"
    proc = _start(out)
    _wait_for(out / "checkpoints" / "20", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"ppo-jax train --resume {out}" in stdout
    assert "Traceback" not in stderr
    stopped_at = RunCheckpoints(out).latest_update()
    assert stopped_at is not None and 20 <= stopped_at < 400
    assert run_cli("train", "--resume", out, "--quiet") == 0
    assert summary(out)["params_sha256"] == summary(long_reference)["params_sha256"]


def test_stop_signal_while_compiling_stops_at_the_first_checkpoint(long_reference, tmp_path):
    out = tmp_path / "compiling"
    proc = _start(out)
    _wait_for(out / "config.json", proc)  # written once the stop handler is installed, before compiling
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and f"ppo-jax train --resume {out}" in stdout
    assert RunCheckpoints(out).latest_update() == 20  # the first boundary: nothing trained is lost
    assert run_cli("train", "--resume", out, "--quiet") == 0
    assert summary(out)["params_sha256"] == summary(long_reference)["params_sha256"]


def test_sigint_without_checkpoint_interval_says_so_and_finishes(tmp_path):
    out = tmp_path / "no-interval"
    proc = _start(out, every=None, updates=2000)
    _wait_for(out / "config.json", proc)  # written once the stop handler is installed, before compiling
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "no checkpoint boundary" in stderr and "--checkpoint-every" in stderr
    assert summary(out)["num_updates"] == 2000 and (out / "metrics.csv").exists()


def test_second_sigint_aborts_at_once_without_saving(tmp_path):
    out = tmp_path / "aborted"
    proc = _start(out, every=None, updates=100_000)  # far longer than the test waits
    _wait_for(out / "config.json", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10.0
    assert proc.returncode == -signal.SIGINT, stderr
    assert "aborted without saving" in stderr and not (out / "summary.json").exists()


def test_checkpoints_after_a_resume_fall_on_multiples_of_the_interval(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *TINY, *TINY_STEPS, "--checkpoint-every", "3", "--out", run, "--quiet") == 0
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [3, 6, 9, 10]
    for name in ("6", "9", "10"):
        shutil.rmtree(run / "checkpoints" / name)
    (run / "summary.json").unlink()
    assert run_cli("train", "--resume", run, "--checkpoint-every", "2", "--quiet") == 0
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [3, 4, 6, 8, 10]


def test_eval_is_deterministic_and_uses_the_mode_action(full_run):
    config = ppo_jax.default_config(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2, total_timesteps=320)
    ctx = make_context(config)
    saved, _ = RunCheckpoints(full_run).restore(ctx)
    params = jax.tree.map(lambda x: x[0], saved.state.params)
    roll = ctx.rollout
    acting = Acting(ctx.policy, ctx.dist, roll.spec)

    def act(obs, key, stochastic):
        return policy_action(acting, params, None, (), obs, jnp.ones(obs.shape[:1], bool), key, stochastic)[0]

    def run(key, stochastic=False):
        return evaluate(roll.env, roll.env_params, acting, params, None, key, 8, 500, stochastic)

    a, b = run(jax.random.key(3)), run(jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(a.returns), np.asarray(b.returns))
    # the deterministic action is the argmax of the logits, whatever the key
    obs = jax.random.normal(jax.random.key(0), (64, 4))
    logits = np.asarray(ctx.policy.network.apply(params, obs).dist)
    for seed in range(3):
        action = act(obs, jax.random.key(seed), False)
        np.testing.assert_array_equal(np.asarray(action), logits.argmax(-1))
    sampled = [np.asarray(act(obs, jax.random.key(s), True)) for s in (0, 1)]
    assert not np.array_equal(*sampled)
    # the CLI reports the same kind of figures and writes eval.json
    assert run_cli("eval", full_run, "--episodes", "4") == 0
    report = json.loads((full_run / "eval.json").read_text())
    assert report["ci95_low"] <= report["return_mean"] <= report["ci95_high"]


def test_exported_policy_reproduces_trained_actions(tmp_path):
    out = tmp_path / "cont"
    argv = ["train", "--env", "Pendulum-v1", *TINY, "--total-timesteps", "128", "--out", out, "--quiet"]
    assert run_cli(*argv) == 0
    policy = ppo_jax.load_policy(out / "policy-seed0.npz")
    config = ppo_jax.default_config("Pendulum-v1", num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2)
    ctx = make_context(config.replace(total_timesteps=128))
    saved, _ = RunCheckpoints(out).restore(ctx)
    params = jax.tree.map(lambda x: x[0], saved.state.params)
    stats = jax.tree.map(lambda x: x[0], saved.state.env.obs_stats)
    obs = 3.0 * jax.random.normal(jax.random.key(1), (32, 3))
    mean = np.asarray(ctx.policy.network.apply(params, normalize(obs, stats)).dist[0])
    expected = np.clip(mean, -2.0, 2.0)  # Pendulum torque bounds
    np.testing.assert_allclose(np.asarray(policy.act(obs)), expected, rtol=1e-6, atol=1e-6)
    assert policy.env == "Pendulum-v1"
    # the file holds only arrays: it loads with pickling disabled
    with np.load(out / "policy-seed0.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_library_save_and_load_round_trip(tmp_path):
    config = ppo_jax.default_config(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2, total_timesteps=64)
    result = jax.jit(ppo_jax.make_train(config))(jax.random.key(0))
    ppo_jax.save(tmp_path / "ckpt", result.state, config)
    state, loaded_config = ppo_jax.load(tmp_path / "ckpt")
    assert loaded_config == config
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(jax.random.key_data(state.key), jax.random.key_data(result.state.key))


# --- failure handling ----------------------------------------------------------------------


def test_checkpoint_from_before_a_traced_field_existed_restores_with_its_default(tmp_path, monkeypatch):
    """A checkpoint written before `adam_eps` became a field holds neither the field in its
    config nor the leaf in its hparams; it restores with the default, the value fixed back then."""
    import ppo_jax.runtime.checkpoint as ckpt

    config = ppo_jax.default_config("CartPole-v1", num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1)
    ctx = make_context(config.replace(total_timesteps=64))
    hparams = ckpt.broadcast_hparams(ctx.config.hyperparams().replace(lr=jnp.float32(7e-4)), 1)
    state = jax.jit(jax.vmap(functools.partial(init_state, ctx)))(jax.random.split(jax.random.key(0), 1), hparams)
    state = state._replace(update=state.update + 1)  # as if one update had run
    old_meta = ckpt._meta

    def meta_without_field(*args):
        meta = old_meta(*args)
        del meta["config"]["adam_eps"]
        return meta

    monkeypatch.setattr(ckpt, "_meta", meta_without_field)
    store = RunCheckpoints(tmp_path)
    old_hparams = {n: getattr(hparams, n) for n in ckpt.TRACED_FIELDS if n != "adam_eps"}
    store.save(ctx, [0], state, old_hparams, {"env_steps": np.full((1, 1), 64.0, np.float32)})
    store.close()
    saved, meta = RunCheckpoints(tmp_path).restore(ctx)
    assert "adam_eps" not in meta["config"]
    np.testing.assert_allclose(np.asarray(saved.hparams.adam_eps), [1e-5])
    np.testing.assert_allclose(np.asarray(saved.hparams.lr), [7e-4])  # saved values are kept
    for got, want in zip(jax.tree.leaves(saved.state.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_resuming_a_finished_run_says_nothing_was_left(full_run, tmp_path, capsys):
    run = tmp_path / "done"
    shutil.copytree(full_run, run)
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--quiet") == 0
    out = capsys.readouterr().out
    assert "no updates were left to run" in out and "nan" not in out
    # the finished run's own figures are kept, not replaced by a resume that ran nothing
    assert (run / "summary.json").read_text() == (full_run / "summary.json").read_text()


def test_resume_of_missing_or_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert run_cli("train", "--resume", tmp_path / "nope") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli("train", "--resume", tmp_path / "empty") == 2  # not a run folder: bad input, as for eval
    err = capsys.readouterr().err
    assert "no checkpoint found" in err and "Traceback" not in err
    assert run_cli("eval", tmp_path / "empty") == 2
    assert "no checkpoint found" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []  # reading created nothing


def test_corrupted_checkpoint_is_a_clear_error(full_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    latest = run / "checkpoints" / "10" / "state"
    for f in latest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "ocdbt" in str(f.parent.name) + f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    data_files = [f for f in latest.rglob("*") if f.is_file() and f.parent.name == "d"]
    for f in data_files:
        f.write_bytes(b"\0" * 7)
    assert run_cli("eval", run, "--episodes", "2") == 1
    err = capsys.readouterr().err
    assert "corrupted" in err or "unreadable" in err
    assert "older checkpoints [2, 4, 6, 8]" in err  # where to go from here
    assert len(err) < 1000  # one line, not TensorStore's specs


def test_checkpoint_from_another_env_or_config_is_refused(full_run):
    meta = RunCheckpoints(full_run).read_meta()
    with pytest.raises(CheckpointError, match="env"):
        check_compatible(meta, ppo_jax.default_config("Acrobot-v1"))
    other = config_from_meta(meta).replace(hidden_sizes=(32, 32))
    with pytest.raises(CheckpointError, match="hidden_sizes"):
        check_compatible(meta, other)


@pytest.mark.parametrize("flags", [["--lr", "0.1"], ["--seeds", "4"], ["--out", "elsewhere"]])
def test_resume_refuses_config_seed_and_folder_flags(full_run, capsys, flags):
    assert run_cli("train", "--resume", full_run, *flags) == 2
    assert f"remove {flags[0]}" in capsys.readouterr().err


def test_integer_flags_accept_whole_numbers_in_scientific_notation(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--total-timesteps", "1e6"]).total_timesteps == 1_000_000
    assert parser.parse_args(["train", "--num-envs", "+8"]).num_envs == 8
    for text in ("1.5", "1e3.5", "inf", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--total-timesteps", text])
        assert "expects an integer" in capsys.readouterr().err


def test_a_fresh_run_refuses_a_folder_that_holds_another_run(full_run, tmp_path, capsys):
    # Mixing two runs' checkpoints made `eval` report the old run's policy.
    before = sorted(p.name for p in (full_run / "checkpoints").iterdir())
    config_before = (full_run / "config.json").read_text()
    assert run_cli("train", *TINY, *TINY_STEPS, "--lr", "1e-3", "--out", full_run, "--quiet") == 2
    err = capsys.readouterr().err
    assert "error: out:" in err and f"--resume {full_run}" in err and "checkpoints" in err
    assert sorted(p.name for p in (full_run / "checkpoints").iterdir()) == before
    assert (full_run / "config.json").read_text() == config_before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("unrelated")  # a folder without a run is fine
    assert refuse_used_run_dir(str(tmp_path / "other")) is None


@pytest.mark.parametrize(
    "argv, field",
    [
        (["train", "--seed", str(2**31 - 1), "--seeds", "2"], "seeds"),
        (["compare", "--objective", "reinforce", "--objectives", "clip"], "objective"),
        (["train", "--env", "CartPol-v1"], "env"),
    ],
)
def test_seed_range_and_compare_objective_are_refused_before_anything_is_written(argv, field, tmp_path, capsys):
    assert run_cli(*argv, "--out", tmp_path / "never") == 2
    assert f"error: {field}:" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_hidden_sizes_with_an_empty_entry_is_refused(capsys):
    assert run_cli("train", "--hidden-sizes", "64,,64") == 2
    assert "--hidden-sizes expects comma-separated integers" in capsys.readouterr().err


def test_unwritable_output_folder_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_cli("train", *TINY, *TINY_STEPS, "--out", blocker / "run") == 1
    err = capsys.readouterr().err
    assert "not writable" in err and "Traceback" not in err


@struct.dataclass
class _State(environment.EnvState):
    x: jnp.ndarray


@struct.dataclass
class _Params(environment.EnvParams):
    max_steps_in_episode: int = 50


class NaNAfterEnv(environment.Environment):
    """Rewards 1 until time step 40 of an episode, then NaN."""

    @property
    def default_params(self):
        return _Params()

    def step_env(self, key, state, action, params):
        state = _State(time=state.time + 1, x=state.x)
        reward = jnp.where(state.time > 40, jnp.nan, 1.0)
        return jnp.ones(2), state, reward, jnp.array(False), {}

    def reset_env(self, key, params):
        return jnp.ones(2), _State(time=0, x=jnp.float32(0))

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)


def test_nan_in_environment_stops_training_naming_quantity_and_update(tmp_path, capsys):
    if "NaNAfter-test" not in gymnax.registered_envs:
        gymnax.register("NaNAfter-test", NaNAfterEnv)
    out = tmp_path / "nan"
    argv = ["train", "--env", "NaNAfter-test", *TINY, *TINY_STEPS, "--checkpoint-every", "1", "--out", out]
    assert run_cli(*argv, "--quiet") == 3
    err = capsys.readouterr().err
    # 2 envs x 16 steps per update: step 41 of the first episode falls in update 3
    assert "environment outputs" in err and "at update 3 " in err
    assert "last good checkpoint (update 2)" in err
    assert RunCheckpoints(out).latest_update() == 2
