"""`ppo-jax train --shard-envs` in two processes joined by jax.distributed on loopback (one virtual
CPU device each): the same run as one process with two devices, stopped in one process and resumed
by both, its folder written by process 0 and evaluated; bad requests refused by every process.

Virtual CPU devices need XLA_FLAGS before JAX starts, so every process is a subprocess."""

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

ROOT = Path(__file__).resolve().parents[1]
UPDATES = 24
TRAIN = ["train", "--shard-envs", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2"]
TRAIN += ["--num-epochs", "1", "--total-timesteps", str(4 * 16 * UPDATES), "--checkpoint-every", "2", "--quiet"]
METRICS = ("policy_loss", "value_loss", "grad_norm", "episode_return", "explained_variance", "env_steps")


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(code: str, processes: int = 2) -> list[subprocess.Popen]:
    """`code` in `processes` fresh interpreters of one device each; it finds its distributed flags
    in the list DIST."""
    port = _free_port()
    procs = []
    for i in range(processes):
        dist = ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(processes)]
        dist += ["--process-id", str(i), "--distributed-timeout", "60"]
        script = f"DIST = {dist!r}\n" + textwrap.dedent(code)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=_env(1),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _results(procs: list[subprocess.Popen]) -> list[dict]:
    """The JSON line each process printed last (all must exit 0)."""
    outs = [p.communicate(timeout=600) for p in procs]
    errors = "\n".join(err[-2000:] for _, err in outs)
    if any(p.returncode for p in procs) and "collectives" in errors.lower() and "not" in errors.lower():
        pytest.skip(f"this platform has no CPU collectives for jax.distributed: {errors[-300:]}")
    assert [p.returncode for p in procs] == [0] * len(procs), errors
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _wait_for(path: Path, procs: list[subprocess.Popen], timeout: float = 500.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """In two processes: bad requests, then the run `full`, then the same run `cut` whose process 1
    gets SIGTERM after its first checkpoint; then `cut` resumed by two fresh processes."""
    root = tmp_path_factory.mktemp("processes")
    full, cut = root / "full", root / "cut"
    code = f"""
        import contextlib, io, json
        from ppo_jax.commands.main import main
        train = {TRAIN!r}
        refused = {{}}
        for name, argv in {{
            "no_shard_envs": [a for a in train if a != "--shard-envs"] + ["--out", {str(root / "never")!r}],
            "no_out": train,
            "num_envs": [*train, "--num-envs", "3", "--out", {str(root / "never")!r}],
        }}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                refused[name] = [main([*argv, *DIST]), err.getvalue().strip()]
        codes = [main([*train, "--out", {str(full)!r}, *DIST]), main([*train, "--out", {str(cut)!r}, *DIST])]
        print(json.dumps({{"refused": refused, "codes": codes}}))
    """
    procs = _launch(code)
    _wait_for(cut / "checkpoints" / "2", procs)
    procs[1].send_signal(signal.SIGTERM)  # one process asked to stop: both stop at the same update
    first = _results(procs)
    stopped = sorted(int(p.name) for p in (cut / "checkpoints").iterdir() if p.name.isdigit())
    stopped_summary = (cut / "summary.json").exists()
    resume = f"""
        import json
        from ppo_jax.commands.main import main
        print(json.dumps({{"code": main(["train", "--resume", {str(cut)!r}, "--quiet", *DIST])}}))
    """
    second = _results(_launch(resume))
    info = {"root": root, "full": full, "cut": cut, "first": first, "second": second, "stopped": stopped}
    return {**info, "stopped_summary": stopped_summary}


@pytest.fixture(scope="module")
def reference(runs):
    """The same run by one process with two devices, the final parameters of both runs, and eval
    of the two-process run's folder."""
    one = runs["root"] / "one"
    code = f"""
        import json, jax, numpy as np
        from ppo_jax.commands.main import main
        from ppo_jax.engine.train import make_context
        from ppo_jax.runtime.checkpoint import RunCheckpoints, config_from_meta

        def params(run):
            with RunCheckpoints(run, create=False) as store:
                saved, _ = store.restore(make_context(config_from_meta(store.read_meta())))
            return np.concatenate([np.ravel(x) for x in jax.tree.leaves(saved.state.params)]).tolist()

        assert main([*{TRAIN!r}, "--out", {str(one)!r}]) == 0
        evaluated = main(["eval", {str(runs["full"])!r}, "--episodes", "3"])
        print(json.dumps({{"one": params({str(one)!r}), "two": params({str(runs["full"])!r}), "eval": evaluated}}))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(2),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return one, json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_bad_requests_are_refused_by_every_process_before_compiling(runs):
    info = runs
    for result in info["first"]:
        refused = result["refused"]
        assert refused["no_shard_envs"][0] == 2 and "error: shard_envs:" in refused["no_shard_envs"][1]
        assert refused["no_out"][0] == 2 and "error: out:" in refused["no_out"][1]
        assert refused["num_envs"][0] == 2 and "error: num_envs: 3 environments" in refused["num_envs"][1]
        assert all(len(text.splitlines()) == 1 for _, text in refused.values())
    assert not (info["root"] / "never").exists()


def test_two_processes_train_one_run_and_process_0_writes_it(runs):
    info = runs
    assert [r["codes"][0] for r in info["first"]] == [0, 0]
    summary = _summary(info["full"])
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["shard_envs"]
    assert summary["num_updates"] == UPDATES and summary["checkpoints_saved"] == UPDATES // 2
    for name in ("config.json", "metrics.csv", "curve.png", "policy-seed0.npz"):
        assert (info["full"] / name).exists()


def test_two_processes_of_one_device_equal_one_process_of_two(reference):
    one, result = reference
    two = one.parent / "full"
    np.testing.assert_allclose(result["two"], result["one"], rtol=1e-5, atol=1e-6)
    rows = [np.genfromtxt(run / "metrics.csv", delimiter=",", names=True) for run in (one, two)]
    for name in METRICS:
        np.testing.assert_allclose(rows[1][name], rows[0][name], rtol=1e-4, atol=1e-6, equal_nan=True)
    assert _summary(one)["processes"] == 1 and _summary(one)["devices"] == 2


def test_a_stop_in_one_process_stops_both_and_both_resume_it_exactly(runs):
    info = runs
    assert [r["codes"][1] for r in info["first"]] == [130, 130]
    assert not info["stopped_summary"] and 2 <= max(info["stopped"]) < UPDATES
    assert [r["code"] for r in info["second"]] == [0, 0]
    full, cut = _summary(info["full"]), _summary(info["cut"])
    assert cut["params_sha256"] == full["params_sha256"] and cut["processes"] == 2
    assert (info["cut"] / "metrics.csv").read_text() == (info["full"] / "metrics.csv").read_text()


def test_eval_reads_the_two_process_run_in_one_process(reference):
    one, result = reference
    assert result["eval"] == 0
    record = json.loads((one.parent / "full" / "eval.json").read_text())
    assert record["episodes_per_seed"] == 3


def test_a_process_that_cannot_reach_the_coordinator_fails_in_one_line(tmp_path, capsys):
    import jax

    from ppo_jax.commands.main import main

    argv = [*TRAIN, "--out", str(tmp_path / "never"), "--coordinator-address", f"127.0.0.1:{_free_port()}"]
    t0 = time.perf_counter()
    assert main([*argv, "--num-processes", "2", "--process-id", "1", "--distributed-timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "could not start the distributed runtime" in err
    assert time.perf_counter() - t0 < 30 and not jax.distributed.is_initialized()
    assert not (tmp_path / "never").exists()
