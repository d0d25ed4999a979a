"""Long RL runs: checkpoints every N updates, exact resume (the same parameter hash as an
uninterrupted run), a stop request honoured at the next checkpoint, the NaN/Inf check naming the
quantity and the update, and the command's --checkpoint-every / --resume with a real SIGINT."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.errors import NonFiniteError, RunStopped
from ppo_jax.rlhf import Frozen, RLHFConfig, make_setup
from ppo_jax.rlhf.rl_run import RunOptions, chunk_length, run_rl_phase
from ppo_jax.rlhf.rollout import RLParams
from ppo_jax.runtime.files import params_sha256

jax.config.update("jax_numpy_rank_promotion", "raise")

TINY = dict(digits=1, d_model=16, num_layers=1, rl_updates=4, rl_batch=16, group_size=4, ent_coef=0.05)


class Requested:
    """A stop request that has already arrived."""

    requested = True


def perturbed(params, scale=0.3):
    """Initial parameters moved off the uniform policy (the output head starts at zero, where the
    entropy gradient vanishes and nothing would move)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


@pytest.fixture(scope="module")
def start():
    config = RLHFConfig(**TINY)
    setup = make_setup(config.static_rl_config())
    params = perturbed(setup.policy.init(jax.random.key(0)))
    frozen = Frozen(params, None, jnp.float32(0.0), jnp.float32(1.0))
    keys = jax.random.split(jax.random.key(1), 2)
    return config, setup, RLParams(params, None), frozen, keys


def run(start, options=None):
    config, setup, params, frozen, keys = start
    return run_rl_phase(setup, params, frozen, keys, config.rl_hyperparams(), None, options)


def test_chunks_end_on_multiples_of_the_interval():
    assert [chunk_length(5, 2, d) for d in (0, 2, 4)] == [2, 2, 1]
    assert chunk_length(5, 0, 0) == 5 and chunk_length(5, 3, 1) == 2


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(start, tmp_path):
    whole, history = run(start)  # one program, no checkpoints
    with pytest.raises(RunStopped) as stopped:
        run(start, RunOptions(tmp_path, checkpoint_every=2, stop=Requested()))
    assert stopped.value.update == 2 and "ppo-jax rlhf --resume" in str(stopped.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    resumed, resumed_history = run(start, RunOptions(tmp_path, checkpoint_every=2, resume=True))
    assert params_sha256(resumed.params) == params_sha256(whole.params)
    assert params_sha256(resumed.opt_state) == params_sha256(whole.opt_state)
    assert set(resumed_history) == set(history)
    for name, values in history.items():
        np.testing.assert_array_equal(resumed_history[name], values, err_msg=name)  # [seeds, updates]
    assert history["kl"].shape == (2, 4) and np.all(history["nonfinite"] == 0)
    assert np.all(history["kl"][:, 1:] > 0)  # the policy moved away from the reference
    # saved at every multiple of 2 (4 is also the end)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 4]


def test_nonfinite_parameters_are_named_with_the_update(start):
    config, setup, params, frozen, keys = start
    leaves, tree = jax.tree.flatten(params.policy)
    broken = jax.tree.unflatten(tree, [leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan), *leaves[1:]])
    with pytest.raises(NonFiniteError) as err:
        run_rl_phase(setup, RLParams(broken, None), frozen, keys, config.rl_hyperparams())
    message = str(err.value)
    assert "at RL update 1 " in message and "parameters" in message and "no checkpoint was written" in message


CLI_FLAGS = [
    "--digits=1",
    "--d-model=16",
    "--num-layers=1",
    "--pretrain-steps=20",
    "--pretrain-batch=32",
    "--rl-updates=4",
    "--rl-batch=16",
    "--group-size=4",
    "--eval-prompts=16",
    "--num-samples=2",
    "--no-compile-cache",
]


def check_tensorboard_against_csv(run):
    """The live event files hold every RL update of metrics.csv (written from the history after
    the run) at its update, the pretraining loss at every log_every step, config and summary."""
    import csv

    from test_loggers import read_tensorboard

    scalars, texts = read_tensorboard(run / "tensorboard" / "seed0")
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    for name in ("accuracy", "reward", "kl", "entropy", "length", "train_clip_frac", "train_approx_kl"):
        logged = scalars[f"train/{name}"]
        assert sorted(logged) == [1, 2, 3, 4], name
        for row in rows:
            np.testing.assert_allclose(logged[int(row["update"])], float(row[name]), rtol=1e-5, atol=1e-7)
    assert sorted(scalars["train/pretrain_loss"]) == [10, 20] and "train/nonfinite" not in scalars
    assert json.loads(texts["config/text_summary"])["pretrain_steps"] == 20
    assert "accuracy_after" in json.loads(texts["summary/text_summary"])


def test_cli_stops_on_sigint_at_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    from ppo_jax.commands import rlhf as command
    from ppo_jax.rlhf.run_files import POLICY_NAME

    whole = tmp_path / "whole"
    assert command.main([*CLI_FLAGS, "--quiet", "--tensorboard", "--log-every=10", "--out", str(whole)]) == 0
    check_tensorboard_against_csv(whole)
    printer = command.make_printer

    def interrupting(config):
        shown = printer(config)

        def callback(phase, step, metrics):
            shown(phase, step, metrics)
            if phase == "rl" and int(np.max(step)) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first chunk runs

        return callback

    monkeypatch.setattr(command, "make_printer", interrupting)
    out = tmp_path / "stopped"
    assert command.main([*CLI_FLAGS, "--checkpoint-every=2", "--out", str(out)]) == 130
    printed = capsys.readouterr()
    assert "stopping at the next checkpoint" in printed.err and f"ppo-jax rlhf --resume {out}" in printed.out
    assert json.loads((out / "config.json").read_text())["checkpoint_every"] == 2
    assert (out / "phase1.msgpack").is_file()  # saved once, before the first RL update
    monkeypatch.setattr(command, "make_printer", printer)
    assert command.main(["--resume", str(out), "--no-compile-cache"]) == 0
    resumed = capsys.readouterr().out
    assert "[grpo    4/4]" in resumed  # the resumed run reports its updates
    assert "[pretrain" not in resumed  # phase 1 read back from the folder, not run again
    summary = json.loads((out / "rlhf.json").read_text())
    assert "pretrain" not in summary["wall_seconds"] and "phase1_restore" in summary["wall_seconds"]
    assert (out / POLICY_NAME).read_bytes() == (tmp_path / "whole" / POLICY_NAME).read_bytes()
    assert command.main(["--resume", str(out)]) == 0  # finished: nothing left to run
    assert "nothing was left to run" in capsys.readouterr().out


def test_eta_from_the_rate_since_the_first_report(monkeypatch):
    from ppo_jax.commands import rlhf as command

    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(command.time, "perf_counter", lambda: next(clock))
    eta = command.ETA()
    assert eta("rl", 3, 23) == ""  # no rate yet (a resumed run starts here)
    assert eta("rl", 5, 23) == "  ETA 1m30s"  # 10 s for 2 updates, 18 left
    assert eta("rl", 23, 23) == ""  # done


def test_phase1_file_round_trip_and_refusals(tmp_path):
    from ppo_jax.errors import CheckpointError
    from ppo_jax.rlhf import phase1_file
    from ppo_jax.rlhf.pretrain import PhaseResult, RewardModelResult

    reference = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}}
    reward = {"params": {"w": np.full((2, 3), 0.5, np.float32)}}
    frozen = Frozen(reference, reward, jnp.float32(0.25), jnp.float32(2.0))
    rm = RewardModelResult(reward, {"loss": np.array([0.7, 0.6], np.float32)}, jnp.float32(0.9))
    saved = phase1_file.Saved(
        frozen,
        PhaseResult(reference, {"loss": np.array([2.0, 1.5], np.float32)}),
        rm,
        {"pretrain": 3.0},
        {"pretrain": 2.0},
    )
    config = {"task": "preference", "pretrain_steps": 2}
    phase1_file.save(tmp_path, config, saved)
    back = phase1_file.load(tmp_path, dict(config))
    assert params_sha256(back.frozen.reference) == params_sha256(reference)
    assert params_sha256(back.reward_model.params) == params_sha256(reward)
    assert float(back.frozen.reward_mean) == 0.25 and float(back.frozen.reward_std) == 2.0
    np.testing.assert_array_equal(back.pretrain.history["loss"], [2.0, 1.5])
    assert float(back.reward_model.eval_accuracy) == np.float32(0.9) and back.timings == {"pretrain": 3.0}
    assert phase1_file.load(tmp_path / "none", config) is None
    with pytest.raises(CheckpointError, match="differs in pretrain_steps"):
        phase1_file.load(tmp_path, {**config, "pretrain_steps": 3})
    (tmp_path / phase1_file.NAME).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="phase1.msgpack"):
        phase1_file.load(tmp_path, config)
