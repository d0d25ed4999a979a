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


@pytest.fixture
def bench_stubs(tmp_path, monkeypatch):
    """benchmark.py with the peer installs and the report writer recorded instead of run, in a
    fresh current directory, with XDG_CACHE_HOME set and no terminal on stdin."""
    import io

    import benchmark

    calls = {"installs": [], "outputs": []}

    def install(peer, cache):
        calls["installs"].append((peer.name, cache))
        raise OSError("not installed in tests")

    monkeypatch.setattr(benchmark, "ensure_peer_env", install)
    monkeypatch.setattr(benchmark, "write_outputs", lambda report, out: calls["outputs"].append(out))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PPO_JAX_BENCH_CACHE", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return benchmark, calls


def test_bench_refuses_to_install_the_peers_unasked_off_a_terminal(bench_stubs, tmp_path, capsys):
    benchmark, calls = bench_stubs
    assert benchmark.run_benchmark(["--quick", "--only", "rejax,sb3", "--quiet"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1, err
    cache = tmp_path / "xdg" / "ppo_jax_bench"
    for words in ("rejax and sb3", str(cache), "2.3 GB", "--yes", "--only ppo_jax"):
        assert words in lines[0], (words, lines[0])
    assert calls == {"installs": [], "outputs": []} and not cache.exists()


def test_bench_installs_into_xdg_cache_home_and_writes_under_the_current_directory(bench_stubs, tmp_path, capsys):
    benchmark, calls = bench_stubs
    assert benchmark.run_benchmark(["--quick", "--only", "rejax", "--yes", "--quiet"]) == 0
    assert calls["installs"] == [("rejax", tmp_path / "xdg" / "ppo_jax_bench")]
    (out,) = calls["outputs"]
    assert out.resolve() == tmp_path / "elsewhere" / "benchmark-quick"
    assert capsys.readouterr().err.count("\n") <= 1  # --quiet: at most the closing line
