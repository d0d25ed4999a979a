"""Scale-out: runs sharded over devices, one run's environments sharded over devices, and two
processes with jax.distributed, each checked against the same work done on one device.

Virtual CPU devices need XLA_FLAGS before JAX starts, so each case runs in a subprocess."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ppo_jax.commands import sweep as sweep_cli
from ppo_jax.config import ConfigError
from ppo_jax.runtime.distributed import resolve_processes

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "2"]
SWEEP = [*TINY, "--total-timesteps", str(4 * 64), "--seeds", "4", "--grid", "lr=1e-3,3e-4", "--bootstrap-reps", "50"]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )
    return env


def _python(code: str, devices: int, timeout: float = 240) -> dict:
    """Run `code` in a fresh interpreter with `devices` virtual CPU devices; it prints one JSON line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(devices),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _final_returns(record: dict) -> np.ndarray:
    by_index = sorted(record["configurations"], key=lambda c: c["index"])
    return np.asarray([c["final_returns"] for c in by_index])


@pytest.fixture(scope="module")
def one_and_four(tmp_path_factory):
    """The sweep by `ppo-jax sweep` on 4 devices, and the same runs by the library on 1 device."""
    out = tmp_path_factory.mktemp("sweep4")
    code = f"""
        import json, jax, numpy as np
        from ppo_jax.commands import sweep as sweep_cli
        from ppo_jax.config import default_config
        from ppo_jax.runtime.distributed import run_mesh
        from ppo_jax.runtime.sweeps import plan_sweep, run_sweep
        assert sweep_cli.main({[*SWEEP, "--quiet", "--out", str(out)]!r}) == 0
        cfg = default_config("CartPole-v1", num_envs=4, num_steps=16, num_minibatches=2, num_epochs=2,
                             total_timesteps=256)
        plan = plan_sweep(cfg, {{"lr": [1e-3, 3e-4]}}, 4, mesh=run_mesh(jax.devices()[:1]))
        res = run_sweep(plan, bootstrap_reps=50)
        print(json.dumps({{"devices": plan.mesh.size, "returns": res.metrics["episode_return"].tolist(),
                          "loss": res.metrics["value_loss"].tolist()}}))
    """
    one = _python(code, devices=4)
    record = json.loads((out / "sweep.json").read_text())
    rows = {}
    for c in range(2):
        name = next(c2["run_dir"] for c2 in record["configurations"] if c2["index"] == c)
        for s, seed in enumerate(record["seeds"]):
            rows[(c, s)] = np.genfromtxt(out / name / f"seed{seed}" / "metrics.csv", delimiter=",", names=True)
    return one, record, rows


def test_sweep_of_8_runs_on_4_devices_equals_1_device(one_and_four):
    one, record, rows = one_and_four
    assert record["devices"] == 4 and record["processes"] == 1 and one["devices"] == 1
    assert record["num_runs"] == 8 and record["max_parallel"] % 4 == 0
    ref_returns, ref_loss = np.asarray(one["returns"]), np.asarray(one["loss"])  # [U, C, S]
    for (c, s), row in rows.items():
        np.testing.assert_allclose(row["episode_return"], ref_returns[:, c, s], rtol=1e-4, equal_nan=True)
        np.testing.assert_allclose(row["value_loss"], ref_loss[:, c, s], rtol=1e-3, atol=1e-5)
    assert np.isfinite(ref_returns).any() and np.ptp(ref_loss[-1]) > 0  # runs differ: not one run copied


def test_shard_envs_on_2_and_4_devices_matches_1_device():
    code = """
        import functools, json, jax, numpy as np
        from ppo_jax.config import default_config
        from ppo_jax.engine.sharded import ENV_AXIS, make_env_sharding, place_env_sharded, run_env_sharded
        from ppo_jax.engine.train import init_state, make_context
        from ppo_jax.runtime.distributed import run_mesh
        cfg = default_config("CartPole-v1", num_envs=4, num_steps=16, num_minibatches=2, num_epochs=2,
                             total_timesteps=4 * 64)
        out = {}
        for d in (1, 2, 4):
            es = make_env_sharding(make_context(cfg), run_mesh(jax.devices()[:d], ENV_AXIS))
            hp = cfg.hyperparams()
            state = place_env_sharded(es, jax.jit(functools.partial(init_state, es.ctx))(jax.random.key(3), hp))
            state, m = jax.jit(functools.partial(run_env_sharded, es, num_updates=cfg.num_updates))(state, hp)
            leaves = jax.tree.leaves(state.params)
            out[d] = {"params": np.concatenate([np.ravel(x) for x in leaves]).tolist(),
                      "metrics": {k: np.asarray(v).tolist() for k, v in m.items()},
                      "env_sharded": len(state.env.obs.sharding.device_set)}
        print(json.dumps(out))
    """
    out = _python(code, devices=4)
    ref = out["1"]
    assert ref["metrics"]["env_steps"][-1] == 4 * 64
    for d in ("2", "4"):
        assert out[d]["env_sharded"] == int(d)
        np.testing.assert_allclose(out[d]["params"], ref["params"], rtol=1e-4, atol=1e-5)
        for name in ("policy_loss", "value_loss", "grad_norm", "episode_return", "explained_variance"):
            np.testing.assert_allclose(out[d]["metrics"][name], ref["metrics"][name], rtol=1e-3, atol=1e-5)
    init = _python(
        """
        import functools, json, jax, numpy as np
        from ppo_jax.config import default_config
        from ppo_jax.engine.sharded import make_env_sharding
        from ppo_jax.engine.train import init_state, make_context
        cfg = default_config("CartPole-v1", num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=64)
        es = make_env_sharding(make_context(cfg))
        s = init_state(es.ctx, jax.random.key(3), cfg.hyperparams())
        print(json.dumps(np.concatenate([np.ravel(x) for x in jax.tree.leaves(s.params)]).tolist()))
        """,
        devices=1,
    )
    assert not np.allclose(init, ref["params"])  # training moved the parameters


def test_shard_envs_adapts_the_kl_coefficient_to_the_kl_the_update_ended_at():
    # As in test_compare: one epoch of one minibatch, a 1e-12 target, so β doubles every update
    # when the KL is measured (over all devices' envs) after the gradient step.
    code = """
        import functools, json, jax, numpy as np
        from ppo_jax.config import default_config
        from ppo_jax.engine.sharded import ENV_AXIS, make_env_sharding, place_env_sharded, run_env_sharded
        from ppo_jax.engine.train import init_state, make_context
        from ppo_jax.runtime.distributed import run_mesh
        cfg = default_config("CartPole-v1", objective="kl_penalty", kl_coef=0.8, kl_target=1e-12, num_envs=4,
                             num_steps=16, num_minibatches=1, num_epochs=1, total_timesteps=4 * 48)
        es = make_env_sharding(make_context(cfg), run_mesh(jax.devices()[:2], ENV_AXIS))
        hp = cfg.hyperparams()
        state = place_env_sharded(es, jax.jit(functools.partial(init_state, es.ctx))(jax.random.key(3), hp))
        state, m = jax.jit(functools.partial(run_env_sharded, es, num_updates=cfg.num_updates))(state, hp)
        print(json.dumps({"logged": np.asarray(m["kl_coef"]).tolist(), "final": float(state.objective_state)}))
    """
    out = _python(code, devices=2)
    np.testing.assert_allclose(out["logged"], 0.8 * 2.0 ** np.arange(3), rtol=1e-6)
    np.testing.assert_allclose(out["final"], 0.8 * 2.0**3, rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(argv: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "ppo_jax.commands.sweep", *argv]
            + ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
            + ["--distributed-timeout", "60"],
            env=_env(1),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _codes(procs: list[subprocess.Popen]) -> list[int]:
    results = [p.communicate(timeout=240) for p in procs]
    errors = "\n".join(err[-2000:] for _, err in results)
    if any(p.returncode not in (0, 130) for p in procs) and "collectives" in errors.lower() and "not" in errors.lower():
        pytest.skip(f"this platform has no CPU collectives for jax.distributed: {errors[-300:]}")
    return [p.returncode for p in procs]


def test_two_processes_sweep_stop_together_resume_and_process_0_writes_it(tmp_path, one_and_four):
    """Two processes share the sweep's checkpoints in one folder: SIGTERM to process 1 after the
    first checkpoint stops both at the same update (exit 130), two fresh processes resume it, and
    the runs end as the 4-device sweep's do."""
    out = tmp_path / "sweep"
    procs = _two_processes([*SWEEP, "--quiet", "--out", str(out), "--checkpoint-every", "1"])
    deadline = time.monotonic() + 200
    while not (out / "checkpoints" / "1").exists():
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, [p.communicate() for p in procs]
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    assert _codes(procs) == [130, 130]
    stopped = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert stopped < 4 and not (out / "sweep.json").exists()
    assert _codes(_two_processes(["--resume", str(out), "--quiet"])) == [0, 0]
    record = json.loads((out / "sweep.json").read_text())
    assert record["processes"] == 2 and record["devices"] == 2 and record["num_runs"] == 8
    _, ref, _ = one_and_four
    np.testing.assert_allclose(_final_returns(record), _final_returns(ref), rtol=1e-4)
    assert len(list((out / "runs").glob("*/seed*/metrics.csv"))) == 8


def test_unreachable_coordinator_fails_clearly_within_the_timeout(tmp_path):
    port = _free_port()  # nobody listens there
    argv = [*SWEEP, "--out", str(tmp_path / "never"), "--coordinator-address", f"127.0.0.1:{port}"]
    argv += ["--num-processes", "2", "--process-id", "1", "--distributed-timeout", "3"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ppo_jax.commands.sweep", *argv],
        env=_env(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "could not start the distributed runtime" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    assert elapsed < 60
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--num-processes", "2", "--process-id", "2"], "process_id"),
        (["--num-processes", "2", "--process-id", "-1"], "process_id"),
        (["--num-processes", "0", "--process-id", "0"], "num_processes"),
        (["--num-processes", "2"], "process_id"),
        (["--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"], "coordinator_address"),
    ],
)
def test_bad_process_flags_are_refused_before_starting(flags, field, tmp_path, capsys):
    import jax

    argv = [*SWEEP, "--out", str(tmp_path / "never"), *flags]
    if "--coordinator-address" not in flags:
        argv += ["--coordinator-address", "127.0.0.1:1"]
    assert sweep_cli.main(argv) == 2
    assert f"error: {field}:" in capsys.readouterr().err
    assert not jax.distributed.is_initialized() and not (tmp_path / "never").exists()


def test_processes_from_environment_and_slurm():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert resolve_processes(environ=env) == ("10.0.0.1:1234", 4, 3, "environment")
    assert resolve_processes("h:1", 2, 0, environ=env).source == "flags"  # flags win
    assert resolve_processes(environ={}) is None
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8"}
    assert resolve_processes(environ=slurm).source == "slurm"
    assert resolve_processes(environ={**slurm, "SLURM_STEP_NUM_TASKS": "1"}) is None
    with pytest.raises(ConfigError, match="process_id"):
        resolve_processes(environ={**env, "JAX_PROCESS_ID": "4"})


def test_sharding_input_errors(tmp_path, capsys):
    from ppo_jax.commands import main as cli
    from ppo_jax.config import default_config
    from ppo_jax.engine.sharded import ENV_AXIS, make_env_sharding
    from ppo_jax.engine.train import make_context
    from ppo_jax.runtime.distributed import check_divisible, run_mesh

    with pytest.raises(ConfigError, match="3 seeds do not divide over 4 devices"):
        check_divisible(3, 4, "seeds", "seeds")
    cfg = default_config("CartPole-v1", num_envs=4, num_steps=15, num_minibatches=4, total_timesteps=60)
    with pytest.raises(ConfigError, match="num_steps = 15 must be divisible by num_minibatches = 4") as err:
        make_env_sharding(make_context(cfg))
    assert err.value.field == "num_minibatches"
    with pytest.raises(ConfigError, match="normalize_obs.*--no-normalize-obs --no-normalize-reward"):
        make_env_sharding(make_context(default_config("Pendulum-v1")), run_mesh(axis=ENV_AXIS))
    for flags in (["--seeds", "2"],):  # (--keep is allowed: --shard-envs runs keep checkpoints)
        assert cli.main(["train", "--shard-envs", *flags, "--out", str(tmp_path / "x")]) == 2
        assert f"remove {flags[0]}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_global_advantage_normalisation_matches_the_one_device_formula():
    # In-process on a one-device mesh: the pmean/pmax formula of the sharded update against
    # `normalize_advantages`, on spread-out and on constant minibatches.
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from ppo_jax.core.losses import normalize_advantages
    from ppo_jax.engine.sgd import Collective
    from ppo_jax.engine.sharded import ENV_AXIS

    mesh = jax.make_mesh((1,), (ENV_AXIS,))
    global_norm = lambda adv: normalize_advantages(adv, reduce=Collective(ENV_AXIS))  # noqa: E731
    sharded = jax.jit(jax.shard_map(global_norm, mesh=mesh, in_specs=P(ENV_AXIS), out_specs=P(ENV_AXIS)))
    norm = lambda adv: sharded(jax.device_put(adv, jax.NamedSharding(mesh, P(ENV_AXIS))))  # noqa: E731
    rng = np.random.default_rng(61)
    spread = jnp.asarray((1.5 + rng.normal(size=64)).astype(np.float32))
    np.testing.assert_allclose(np.asarray(norm(spread)), np.asarray(normalize_advantages(spread)), rtol=1e-5, atol=1e-6)
    for value in (0.1, 0.3, -2.2):
        np.testing.assert_array_equal(np.asarray(norm(jnp.full((64,), value, jnp.float32))), 0.0)


def test_shard_envs_run_keeps_checkpoints_resumes_exactly_and_is_evaluated(tmp_path):
    """`train --shard-envs` goes through the run driver: checkpoints, exact resume, eval."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    argv = ["train", "--shard-envs", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2"]
    argv += ["--num-epochs", "1", "--total-timesteps", str(4 * 16 * 6), "--checkpoint-every", "2", "--quiet"]
    code = f"""
        import json, shutil
        from pathlib import Path
        from ppo_jax.commands.main import main
        argv = {argv!r}
        assert main([*argv, "--out", {str(full)!r}]) == 0
        assert main([*argv, "--out", {str(cut)!r}]) == 0
        cut = Path({str(cut)!r})
        for name in ("summary.json", "metrics.csv"):
            (cut / name).unlink()
        for ckpt in (cut / "checkpoints").iterdir():
            if int(ckpt.name) > 2:
                shutil.rmtree(ckpt)
        assert main(["train", "--resume", str(cut), "--quiet"]) == 0
        assert main(["eval", {str(full)!r}, "--episodes", "3"]) == 0
        print(json.dumps({{"devices": json.loads((cut / "summary.json").read_text())["devices"]}}))
    """
    out = _python(code, devices=2)
    assert out["devices"] == 2
    summaries = [json.loads((run / "summary.json").read_text()) for run in (full, cut)]
    assert summaries[0]["shard_envs"] and summaries[0]["params_sha256"] == summaries[1]["params_sha256"]
    assert (full / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    assert json.loads((full / "eval.json").read_text())["episodes_per_seed"] == 3
    assert sorted(int(p.name) for p in (full / "checkpoints").iterdir()) == [2, 4, 6]
