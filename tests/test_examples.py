"""The plug-ins of examples/ (a policy family, an objective with a traced field of its own, a
hand-written env) driven through every command by reference: train -> eval -> resume (the same
parameters as uninterrupted) -> sweep over a field (one compile; stopped and resumed to the same
parameters; its run folders evaluated) -> compare (an arm's run folder evaluated)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import ppo_jax
from ppo_jax.commands import main as cli
from ppo_jax.runtime import executor
from ppo_jax.runtime.signals import StopRequest

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "2"]
STEPS = ["--total-timesteps", str(2 * 16 * 6)]  # 6 updates

# name: (flags naming the plug-in and setting its own field, the sweep's grid, the field in config.json)
EXAMPLES = {
    "family": (["--network", "examples.layernorm_family:FAMILY", "--ln-width", "16"], "lr=1e-3,3e-3", "ln_width"),
    "objective": (
        ["--objective", "examples.dual_clip:OBJECTIVE", "--dual-clip-c", "2.5"],
        "dual_clip_c=2,4",
        "dual_clip_c",
    ),
    "env": (["--env", "examples.target_env:make", "--episode-length", "12"], "lr=1e-3,3e-3", "episode_length"),
}


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module", params=list(EXAMPLES))
def trained(request, tmp_path_factory):
    """An uninterrupted run of one example with a checkpoint every 2 updates (all kept)."""
    flags, grid, field = EXAMPLES[request.param]
    out = tmp_path_factory.mktemp(request.param)
    assert run_cli("train", *flags, *TINY, *STEPS, "--checkpoint-every", "2", "--out", out, "--quiet") == 0
    return request.param, out


def test_config_json_records_the_plug_in_and_its_field(trained):
    name, out = trained
    flags, _, field = EXAMPLES[name]
    record = json.loads((out / "config.json").read_text())
    kind = flags[0].lstrip("-")
    assert record[kind] == flags[1]
    assert record[field] == pytest.approx(float(flags[3]))
    assert "unrecorded" not in record


def test_eval_rebuilds_the_run_from_its_folder(trained):
    _, out = trained
    assert run_cli("eval", out, "--episodes", "2") == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["update"] == 6 and np.isfinite(report["return_mean"])


def test_resume_after_interruption_gives_the_uninterrupted_parameters(trained, tmp_path):
    _, out = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)  # the folder a stop right after checkpoint 2 leaves behind
    for name in ("summary.json", "metrics.csv", "curve.png", "eval.json"):
        (run / name).unlink(missing_ok=True)
    for ckpt in (run / "checkpoints").iterdir():
        if ckpt.name.isdigit() and int(ckpt.name) > 2:
            shutil.rmtree(ckpt)
    assert run_cli("train", "--resume", run, "--quiet") == 0
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["params_sha256"] == json.loads((out / "summary.json").read_text())["params_sha256"]


def test_exported_policy_loads_from_the_file_alone(trained):
    name, out = trained
    policy = ppo_jax.load_policy(out / "policy-seed0.npz")
    obs = np.zeros((3, 2 if name == "env" else 4), np.float32)
    assert np.asarray(policy.act(obs)).shape == (3,)


class _StopAtOnce(StopRequest):
    """Ctrl-C before the first chunk: the sweep stops at its first checkpoint."""

    def __enter__(self):
        super().__enter__()
        self.requested = True
        return self


def test_sweep_over_a_field_compiles_once_and_resumes_exactly(trained, tmp_path, monkeypatch):
    """The sweep over the plug-in's field: one compile; stopped at its first checkpoint and resumed,
    every run ends with the uninterrupted sweep's parameters; each run folder can be evaluated."""
    name, _ = trained
    flags, grid, _ = EXAMPLES[name]
    sweep = ["sweep", *flags, *TINY, *STEPS, "--grid", grid, "--seeds", "2", "--checkpoint-every", "2", "--quiet"]
    whole, stopped = tmp_path / "sweep", tmp_path / "stopped"
    assert run_cli(*sweep, "--out", whole) == 0
    record = json.loads((whole / "sweep.json").read_text())
    assert record["compiles"] == 1 and record["num_runs"] == 4
    assert record["config"][flags[0].lstrip("-")] == flags[1]
    with monkeypatch.context() as patch:
        patch.setattr(executor, "StopRequest", _StopAtOnce)
        assert run_cli(*sweep, "--out", stopped) == 130
    assert run_cli("sweep", "--resume", stopped, "--quiet") == 0
    resumed = json.loads((stopped / "sweep.json").read_text())
    shas = [{c["index"]: c["params_sha256"] for c in r["configurations"]} for r in (record, resumed)]
    assert shas[0] == shas[1] and resumed["resumed_at_update"] == 2
    run = next(iter(sorted(whole.glob("runs/*/seed*"))))
    assert run_cli("eval", run, "--episodes", "2", "--quiet") == 0
    assert json.loads((run / "eval.json").read_text())["update"] == 6


def test_compare_trains_the_plug_in(trained, tmp_path):
    name, _ = trained
    flags, _, _ = EXAMPLES[name]
    out = tmp_path / "compare"
    if name == "objective":
        args = ["--objectives", f"clip,{flags[1]}", *flags[2:]]
    else:
        args = [*flags, "--objectives", "clip,a2c"]
    assert run_cli("compare", *args, *TINY, *STEPS, "--seeds", "2", "--out", out) == 0
    rows = {r["objective"]: r for r in json.loads((out / "compare.json").read_text())["objectives"]}
    assert len(rows) == 2 and all(len(r["final_returns"]) == 2 for r in rows.values())
    arm = out / rows[flags[1] if name == "objective" else "a2c"]["run_dir"]  # the plug-in's arm: a run folder
    assert json.loads((arm / "config.json").read_text())[flags[0].lstrip("-")] == flags[1]
    assert run_cli("eval", arm, "--episodes", "2", "--quiet") == 0
    assert json.loads((arm / "eval.json").read_text())["update"] == 6


def test_a_static_field_of_a_plug_in_cannot_be_swept(tmp_path, capsys):
    flags = ["--network", "examples.layernorm_family:FAMILY"]
    assert run_cli("sweep", *flags, *TINY, *STEPS, "--grid", "ln_width=16,32", "--out", tmp_path / "s") == 2
    assert "static field" in capsys.readouterr().err
