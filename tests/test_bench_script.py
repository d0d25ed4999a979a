"""The benchmark script in scripts/: its FLOP count read from the policy family, and `ppo-jax bench`
finding (or not finding) it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import ppo_jax
from ppo_jax.commands import main as cli
from ppo_jax.config import default_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench.flops import flops_per_env_step, policy_flops  # noqa: E402
from bench.peers import worker_command  # noqa: E402


def mlp_matmul_flops(sizes: list[int]) -> int:
    """2·in·out per layer of an MLP with layer widths `sizes`."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def test_cartpole_forward_flops_match_the_analytic_mlp_count():
    config = default_config("CartPole-v1", hidden_sizes=(64, 64), num_envs=4, num_epochs=4)
    actor = mlp_matmul_flops([4, 64, 64, 2])
    critic = mlp_matmul_flops([4, 64, 64, 1])
    counted = policy_flops(config, batch=64)
    assert counted["forward"] == pytest.approx(actor + critic, rel=0.03)
    assert counted["value"] == pytest.approx(critic, rel=0.03)
    # the gradient of the forward pass costs about 3 forward passes (measured, not assumed)
    assert 2.5 < counted["forward_backward"] / counted["forward"] < 3.5
    per_step = flops_per_env_step(config)
    assert per_step["update"] == pytest.approx(4 * counted["forward_backward"], rel=0.01)
    assert per_step["total"] == pytest.approx(per_step["rollout"] + per_step["gae"] + per_step["update"])


def test_children_start_through_the_script():
    cmd = worker_command({"task": "matmul"})
    assert cmd[0] == sys.executable and Path(cmd[1]) == SCRIPTS / "benchmark.py" and cmd[2] == "_worker"


def test_bench_outside_a_source_checkout_says_where_it_lives(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ppo_jax, "__file__", str(tmp_path / "site-packages" / "ppo_jax" / "__init__.py"))
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ppo-jax: error: the benchmark lives in scripts/benchmark.py") and "\n" not in err
