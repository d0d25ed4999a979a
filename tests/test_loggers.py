"""Live logging: TensorBoard event files and W&B offline runs, read back with readers written here
(the TFRecord framing of event files; the LevelDB-style log of a `.wandb` file), hold every
reported metric of every seed at its env step, as metrics.csv has it, plus the config and summary."""

from __future__ import annotations

import csv
import json
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import ppo_jax
from ppo_jax.commands.main import main
from ppo_jax.errors import ConfigError

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--num-epochs", "1"]
UPDATES = 8  # at most 50 reports per run: every update is reported


def read_tensorboard(folder: Path) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """({tag: {step: value}}, {text tag: text}) of every event file in `folder`."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    texts = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[value.tag][event.step] = value.simple_value
                elif value.HasField("tensor"):
                    texts[value.tag] = value.tensor.string_val[0].decode()
    return scalars, texts


def read_wandb(run_folder: Path) -> dict:
    """The run, config, history rows and summary of one offline `.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_folder.glob("run-*.wandb")
    data, records, pending, pos, block = path.read_bytes(), [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full record, or the last piece of one
            records.append(pb.Record.FromString(pending + chunk))
            pending = b""
        elif kind in (2, 3):
            pending += chunk
    out = {"history": [], "summary": {}}
    for record in records:
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
            out["config"] = {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif which == "history":
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif which == "summary":
            out["summary"].update(
                {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in record.summary.update}
            )
    return out


def csv_rows(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    pytest.importorskip("tensorboardX")
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("logged") / "run"
    argv = ["train", *TINY, "--total-timesteps", str(32 * UPDATES), "--seeds", "2", "--out", str(out), "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("NETRC", str(out.parent / "no-netrc"))
        assert main([*argv, "--tensorboard", "--wandb", "--wandb-project", "tests"]) == 0
    return out


def test_tensorboard_holds_every_metric_of_every_seed_at_its_env_steps(logged_run):
    rows = csv_rows(logged_run / "metrics.csv")
    summary = json.loads((logged_run / "summary.json").read_text())
    for seed in (0, 1):
        scalars, texts = read_tensorboard(logged_run / "tensorboard" / f"seed{seed}")
        mine = [row for row in rows if row["seed"] == seed]
        assert len(mine) == UPDATES
        metrics = [name for name in mine[0] if name not in ("seed", "update", "env_steps")]
        assert {f"train/{name}" for name in metrics} <= set(scalars)
        for name in metrics:
            expected = {int(r["env_steps"]): r[name] for r in mine if np.isfinite(r[name])}
            got = scalars[f"train/{name}"]
            assert sorted(got) == sorted(expected), name
            np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5, atol=1e-7)
        assert json.loads(texts["config/text_summary"])["seed"] == seed
        assert json.loads(texts["summary/text_summary"])["params_sha256"] == summary["params_sha256"]


def test_wandb_offline_run_per_seed_holds_config_metrics_and_summary(logged_run):
    rows = csv_rows(logged_run / "metrics.csv")
    summary = json.loads((logged_run / "summary.json").read_text())
    runs = sorted((logged_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for seed, folder in zip((0, 1), sorted(runs, key=lambda p: p.name.endswith("seed1")), strict=True):
        record = read_wandb(folder)
        assert record["run"].project == "tests" and record["run"].run_group == "run"
        assert record["run"].display_name == f"run-seed{seed}"
        assert record["config"]["seed"] == seed and record["config"]["lr"] == pytest.approx(ppo_jax.default_config().lr)
        mine = [row for row in rows if row["seed"] == seed]
        assert [h["_step"] for h in record["history"]] == [int(r["env_steps"]) for r in mine]
        for h, r in zip(record["history"], mine, strict=True):
            assert h["update"] == r["update"]
            np.testing.assert_allclose(h["train/value_loss"], r["value_loss"], rtol=1e-5)
            if np.isfinite(r["episode_return"]):
                np.testing.assert_allclose(h["train/episode_return"], r["episode_return"], rtol=1e-5)
            else:
                assert "train/episode_return" not in h
        assert record["summary"]["final_return_per_seed"] == pytest.approx(summary["final_return_per_seed"][seed])
        assert record["summary"]["seeds"] == seed
        assert record["summary"]["params_sha256"] == summary["params_sha256"]


def test_sweep_logs_one_wandb_run_per_configuration_and_seed(tmp_path, offline_wandb):
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY, "--total-timesteps", "96", "--grid", "lr=1e-3,3e-3", "--seeds", "2"]
    assert main([*argv, "--out", str(out), "--quiet", "--wandb", "--bootstrap-reps", "100"]) == 0
    records = [read_wandb(folder) for folder in sorted(out.glob("runs/*/wandb/offline-run-*"))]
    assert len(records) == 4
    assert {r["run"].run_group for r in records} == {"sweep"}
    assert sorted((r["config"]["lr"], r["config"]["seed"]) for r in records) == [
        (1e-3, 0),
        (1e-3, 1),
        (3e-3, 0),
        (3e-3, 1),
    ]
    assert all(len(r["history"]) == 3 for r in records)


@pytest.mark.parametrize("flag, package", [("--tensorboard", "tensorboardX"), ("--wandb", "wandb")])
def test_a_missing_logging_package_is_one_error_before_compiling(flag, package, monkeypatch, no_compiles):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else find_spec(name, *a))
    from ppo_jax.commands.common import loggers_from_args
    from ppo_jax.commands.main import build_parser

    args = build_parser().parse_args(["train", flag])
    with no_compiles(), pytest.raises(ConfigError, match=rf"pip install 'ppo_jax\[{flag[2:]}\]'"):
        loggers_from_args(args)
