"""The pure pieces of scripts/reproduce.py: metrics.csv reading, the training-return window, IQM
and its bootstrap CI, the Markdown row (no training)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import reproduce  # noqa: E402
import results_lib  # noqa: E402


def write_fake_metrics(path: Path, returns: np.ndarray, seeds: list[int], batch: int = 100) -> None:
    """A metrics.csv as `ppo-jax train` writes it: one row per (seed, update); returns [U, S]."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "update", "env_steps", "episode_return", "entropy"])
        for s, seed in enumerate(seeds):
            for u in range(returns.shape[0]):
                writer.writerow([seed, u + 1, (u + 1) * batch, f"{returns[u, s]:.6g}", 0.5])


def test_read_metrics_and_training_return_of_the_last_tenth(tmp_path):
    returns = np.arange(20 * 3, dtype=np.float64).reshape(20, 3)
    returns[18:, 2] = np.nan  # seed 12 ended no episode in the last two updates
    returns[19, 1] = np.nan
    write_fake_metrics(tmp_path / "metrics.csv", returns, [10, 11, 12])
    steps, got, seeds = results_lib.read_metrics(tmp_path / "metrics.csv")
    assert seeds == [10, 11, 12]
    np.testing.assert_array_equal(steps, 100 * np.arange(1, 21))
    np.testing.assert_array_equal(got, returns)
    final = results_lib.final_returns(got)  # window = ceil(0.1 * 20) = 2 updates
    np.testing.assert_allclose(final, [(54 + 57) / 2, 55, 53])  # all-NaN window: last value before it


@pytest.mark.parametrize("n", [3, 4, 5, 8, 9])
def test_iqm_matches_scipy_trim_mean(n):
    x = np.random.default_rng(n).normal(size=n)
    assert results_lib.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25))


def test_bootstrap_iqm_brackets_the_point_and_ignores_nan():
    scores = [1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 6.0, 7.0, np.nan]
    out = results_lib.bootstrap_iqm(scores, reps=2000)
    assert out["iqm"] == pytest.approx(scipy_stats.trim_mean([1, 2, 3, 4, 100, 5, 6, 7], 0.25))
    assert out["ci_low"] <= out["iqm"] <= out["ci_high"]
    assert results_lib.bootstrap_iqm([7.0, 7.0, 7.0, 7.0]) == {"iqm": 7.0, "ci_low": 7.0, "ci_high": 7.0}


def cartpole_record(summary: dict) -> dict:
    """A finished CartPole-v1 row at the published budget, 4 seeds, without rejax."""
    return {
        "env": "CartPole-v1",
        "budget": 150_000,
        "budget_scale": 1.0,
        "seeds": [0, 1, 2, 3],
        "published": {"return": 500, "budget": 150_000},
        "ppo_jax": summary,
        "rejax": None,
        "complete": True,
    }


def test_record_summary_and_markdown_row(tmp_path):
    returns = np.tile(np.linspace(0.0, 500.0, 50)[:, None], (1, 4))
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 51), returns, [500.0, 500.0, 480.0, 500.0])
    assert summary["train"]["iqm"] == pytest.approx(np.mean(returns[-5:, 0]))
    assert summary["eval"]["iqm"] == 500.0 and len(summary["curve"]["iqm"]) == 50
    record = cartpole_record(summary)
    row = results_lib.table_row(record)
    assert row.startswith("| CartPole-v1 | 150k | 4 | 500 at 150k | – | 500.0 [")
    assert row.endswith("| – | – | yes |")
    table = results_lib.markdown_table([record])
    assert table.count("\n") == 2 and table.splitlines()[0].count("|") == table.splitlines()[2].count("|")


def test_row_without_a_published_number(tmp_path):
    returns = np.tile(np.linspace(0.0, 10.0, 20)[:, None], (1, 4))
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 21), returns, [9.0, 10.0, 11.0, 10.0])
    record = {
        "env": "Seaquest-MinAtar",
        "budget": 2_000_000,
        "budget_scale": 0.2,
        "seeds": [0, 1, 2, 3],
        "published": {"return": None, "budget": 10_000_000},
        "ppo_jax": summary,
        "rejax": None,
    }
    row = results_lib.table_row(record)
    assert row.startswith("| Seaquest-MinAtar | 2M (0.2×) | 4 | none published | – | 10.0 [")
    assert row.endswith("| – | – | – |")
    record["published"]["return"] = 12.0
    assert results_lib.table_row(record).endswith("| – | – | no (at 0.2× the budget) |")
    results_lib.plot_record(tmp_path / "seaquest.png", record)
    assert (tmp_path / "seaquest.png").stat().st_size > 0


def test_write_table_fills_both_readmes_between_the_markers(tmp_path, monkeypatch):
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    monkeypatch.setattr(reproduce, "DEFAULT_RESULTS", results)
    returns = np.full((20, 4), 500.0)
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 21), returns, [500.0] * 4)
    record = cartpole_record(summary)
    (results / "CartPole-v1.json").write_text(json.dumps(record))
    before, after = "# Project\n\nintro\n", "\n\nafter the table\n"
    (tmp_path / "README.md").write_text(f"{before}<!-- table -->\nold row\n<!-- /table -->{after}")
    reproduce.write_table(reproduce.parse_args(["--table-only"]))
    for readme in (tmp_path / "README.md", results / "README.md"):
        text = readme.read_text()
        assert "old row" not in text and text.count("| CartPole-v1 | 150k | 4 | 500 at 150k | – |") == 1
    top = (tmp_path / "README.md").read_text()
    assert top.startswith(before) and top.endswith(after)
    # a results folder of its own (e.g. --budget-scale 0.1) leaves the project README alone
    other = tmp_path / "scaled"
    other.mkdir()
    (other / "CartPole-v1.json").write_text(json.dumps(record))
    (tmp_path / "README.md").write_text("untouched\n")
    reproduce.write_table(reproduce.parse_args(["--table-only", "--results", str(other)]))
    assert (tmp_path / "README.md").read_text() == "untouched\n" and "CartPole-v1" in (other / "README.md").read_text()


def test_anchor_cells_name_the_algorithm_and_budget():
    returns = np.full((20, 4), 40.0)
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 21), returns, [30.0, 40.0, 50.0, 60.0])
    record = cartpole_record(summary) | {"env": "Breakout-MinAtar", "budget": 10_000_000}
    record["published"] = {"return": 43.378, "budget": 10_000_000, "algorithm": "PPO, lr 1e-3"}
    record["published_other"] = [
        {"return": -0.003, "budget": 120_000, "algorithm": "DQN"},
        {"return": -130.16, "budget": 39_600_000, "algorithm": "OpenES"},
    ]
    cells = [c.strip() for c in results_lib.table_row(record).split("|")[1:-1]]
    assert cells[3] == "43.4 at 10M (PPO, lr 1e-3)"
    assert cells[4] == "0 at 120k (DQN); -130.2 at 39.6M (OpenES)"
    assert cells[5].startswith("45.0 [") and cells[-1] == "yes"  # IQM of 30..60 is 45 >= 43.4
    record["published"]["return"] = 45.5
    assert results_lib.table_row(record).endswith("| no |")
    record["published"] = {"return": 40.0, "budget": 5_000_000}  # reached, but with twice the env steps
    assert results_lib.table_row(record).endswith("| no (at 2× the published budget) |")


def test_every_row_runs_at_its_published_ppo_budget():
    for row in reproduce.ROWS:
        if row.ppo is not None:
            assert row.budget == row.ppo.budget, row.env
            if "/" in row.env:  # a suite row: the suite's own logged baseline, the file named by the task
                suite, name = row.env.split("/")
                assert row.ppo.source.startswith(f"epignatelli/{suite}@") and name in row.ppo.source, row.env
            else:
                assert row.ppo.source.startswith("RobertTLange/gymnax-blines agents/" + row.env + "/"), row.env
    mountain_car = next(r for r in reproduce.ROWS if r.env == "MountainCar-v0")
    assert mountain_car.budget == 250_000  # gymnax-blines agents/MountainCar-v0/ppo.yaml: num_train_steps


def test_table_only_rewrites_stale_published_returns(tmp_path):
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 21), np.full((20, 4), -150.0), [-150.0] * 4)
    record = cartpole_record(summary) | {"env": "Pendulum-v1", "budget": 1_000_000}
    record["published"] = {"return": -130, "budget": 1_000_000, "source": "a README table"}
    (tmp_path / "Pendulum-v1.json").write_text(json.dumps(record))
    reproduce.main(["--table-only", "--results", str(tmp_path), "--envs", "Pendulum-v1"])
    got = json.loads((tmp_path / "Pendulum-v1.json").read_text())
    row = next(r for r in reproduce.ROWS if r.env == "Pendulum-v1")
    assert got["published"]["return"] == row.ppo.value != -130 and got["published"]["source"] == row.ppo.source
    assert [a["algorithm"] for a in got["published_other"]] == [a.algorithm for a in row.others]
    assert got["ppo_jax"] == record["ppo_jax"] and (tmp_path / "Pendulum-v1.png").stat().st_size > 0
    assert "| Pendulum-v1 | 1M | 4 |" in (tmp_path / "README.md").read_text()


def test_suite_rows_pass_their_published_flags_and_use_flat_file_names(tmp_path):
    import dataclasses

    from ppo_jax.config import PPOConfig

    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    suites = [r for r in reproduce.ROWS if "/" in r.env]
    assert {r.env.split("/")[0] for r in suites} >= {"navix", "xminigrid", "craftax"}
    args = reproduce.parse_args(["--results", str(tmp_path), "--runs", str(tmp_path / "runs")])
    for row in suites:
        assert row.flags_source, row.env
        names = [f[2:].replace("-", "_") for f in row.flags if f.startswith("--")]
        assert all(n in fields or (n.startswith("no_") and n[3:] in fields) for n in names), row.env
        plan = reproduce.row_plan(row, args)
        assert plan["json"].parent == tmp_path and plan["run_dir"].parent == tmp_path / "runs"
        assert plan["json"].name == row.env.replace("/", "_") + ".json"
        cmd = reproduce.fresh_train_cmd(row, plan)
        after = cmd[cmd.index("--quiet") + 1 :]  # the row's flags, then its checkpoint flags if any
        assert cmd[:4] == ["ppo-jax", "train", "--env", row.env] and after[: len(row.flags)] == list(row.flags)
    navix = next(r for r in suites if r.env == "navix/Navix-DoorKey-8x8-v0")
    value = flag_values(navix.flags)
    assert navix.budget == 2**20 and value["--num-envs"] == "16" and value["--gamma"] == "0.95"
    assert value["--no-anneal-lr"] is True
    summary = results_lib.impl_summary([0, 1, 2, 3], 100 * np.arange(1, 21), np.full((20, 4), 0.9), [0.9] * 4)
    record = cartpole_record(summary) | {"env": navix.env, "budget": navix.budget}
    record["published"] = {"return": None, "budget": None}
    (tmp_path / "navix_Navix-DoorKey-8x8-v0.json").write_text(json.dumps(record))
    assert [r["env"] for r in results_lib.load_records(tmp_path, [navix.env])] == [navix.env]
    assert results_lib.table_row(record).startswith("| navix/Navix-DoorKey-8x8-v0 | 1.049M | 4 | none published |")


def flag_values(flags) -> dict[str, str | bool]:
    """`--name value` pairs and bare switches (`--name` followed by another flag or nothing: True)."""
    out, i = {}, 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        out[flags[i]] = flags[i + 1] if takes_value else True
        i += 2 if takes_value else 1
    return out


def same_value(a, b) -> bool:
    """Flag values compared as numbers where both are numbers ("1e-3" and 0.001), else as given."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def test_flag_values_reads_switches_and_negative_values():
    got = flag_values(["--normalize-reward", "--init-log-std", "-0.5", "--lr", "1e-3", "--no-anneal-lr"])
    assert got == {"--normalize-reward": True, "--init-log-std": "-0.5", "--lr": "1e-3", "--no-anneal-lr": True}


@pytest.mark.parametrize(
    "env, record_name, budget",
    [("craftax/Craftax-Classic-Symbolic-v1", "cx-a", 1_000_000), ("jumanji/Game2048-v1", "jg-a", 10_000_000)],
)
def test_a_suite_row_runs_the_best_cell_of_its_sweep_record(env, record_name, budget):
    """A suite row with a setting of its own runs exactly the best cell of its sweep record (the
    cell's flags without the grid and the budget, plus the swept values), as flags of the row or
    as the shipped default; the record's seeds are not the seeds the table reports."""
    import ppo_jax

    row = next(r for r in reproduce.ROWS if r.env == env)
    record = json.loads((reproduce.REPO / f"docs/results/sweep-records/{record_name}.json").read_text())
    best = max(record["variants"].values(), key=lambda v: v["iqm"])
    cell = flag_values(best["flags"])
    del cell["--grid"]
    assert int(cell.pop("--total-timesteps")) == row.budget == budget
    cell |= {"--" + name.replace("_", "-"): value for name, value in best["hyperparams"].items()}
    given = flag_values(row.flags)
    assert given.keys() <= cell.keys()  # no flag beyond the cell
    shipped = ppo_jax.default_config(env)
    for name, value in cell.items():
        if name in given:
            assert same_value(given[name], value), (name, given[name], value)
            continue
        held = getattr(shipped, name[2:].replace("-", "_"))
        held = ",".join(map(str, held)) if isinstance(held, tuple) else held
        assert same_value(held, value), (name, held, value)
    assert row.ppo is None
    assert not set(record["seeds"]) & set(range(1000, 1008))
