"""Side-by-side benchmark: ppo_jax against rejax and Stable-Baselines3 PPO on the same settings.

`run_benchmark(argv)` runs every implementation one after another, each training run in its own
subprocess (so peak RSS is measured the same way for all: `os.wait4` on the child), and writes
`results.json`, `README.md` (Markdown tables) and PNG plots to the output folder. Peers run in
virtual environments created once and cached under `~/.cache/ppo_jax_bench/<peer>/`; their runner
scripts live in `scripts/peers/` of the source tree. The ppo_jax runner is this module
(`python -m ppo_jax.bench _worker <json>`).

Measured per implementation and workload: compile seconds (`jit(...).lower(...).compile()`),
env-steps/s of the compiled run (compile excluded), peak RSS of the process, final return (mean
episodic return of the last 10 % of updates, averaged over seeds) and the return of a common
evaluation (stochastic policy, full episodes, normalisation statistics frozen). Also: ppo_jax
throughput against the number of seeds and of environments, peak memory against
total_timesteps, achieved FLOP/s against measured matmul throughput, and a rollout/update split.
Timings are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ppo_jax.runtime.cpu import compiler_options

REPO_ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO_ROOT / "scripts" / "peers"
DEFAULT_CACHE = Path(os.environ.get("PPO_JAX_BENCH_CACHE", Path.home() / ".cache" / "ppo_jax_bench"))
RESULT_PREFIX = "BENCH_RESULT "
# Extra XLA flags for every JAX child (ppo_jax and rejax alike). Empty: ppo_jax's initialiser no
# longer calls LAPACK QR (whose batched form deadlocked jaxlib 0.10's 2-thread CPU pool), and the
# scheduler flag that worked around it cost ppo_jax 15-20 % at 1 seed.
XLA_WORKAROUND = ""
FINAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Peer:
    """A peer implementation: pip requirements installed in order into its own venv, and its runner."""

    name: str
    label: str
    install_steps: tuple[tuple[str, ...], ...]
    constraints: tuple[str, ...]
    runner: str
    vmaps_seeds: bool


PEERS: dict[str, Peer] = {
    "rejax": Peer(
        "rejax",
        "rejax 0.1.3 (JAX)",
        (("rejax==0.1.3", "gymnax==0.0.9", "jax==0.10.2", "jaxlib==0.10.2"),),
        (),
        "rejax_runner.py",
        True,
    ),
    "sb3": Peer(
        "sb3",
        "Stable-Baselines3 2.9.2 (PyTorch CPU)",
        # torch first, alone and pinned, so that pip takes the CPU wheel and never a CUDA build.
        (("torch==2.13.0",), ("stable-baselines3==2.9.2", "gymnasium==1.4.0", "minatar==1.0.15")),
        ("torch==2.13.0",),
        "sb3_runner.py",
        False,
    ),
}
# "ppo_jax" spreads the seeds of a many-seed run over the CPU cores as separate JAX devices (as
# `ppo-jax train --seeds N` does); "ppo_jax_1dev" is the same program on one device.
IMPLS = ("ppo_jax", "ppo_jax_1dev", *PEERS)
OURS = ("ppo_jax", "ppo_jax_1dev")
LABELS = {"ppo_jax": "ppo_jax", "ppo_jax_1dev": "ppo_jax, 1 device", **{p.name: p.label for p in PEERS.values()}}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark setting: a gymnax env and overrides of ppo_jax's `default_config(env)`.

    `many_overrides` apply to the many-seed runs: on 2 CPU cores 32 seeds of the full Pendulum or
    Breakout budget would take hours, so those rows measure throughput at a shorter budget.
    """

    name: str
    env: str
    overrides: dict[str, Any]
    quick_overrides: dict[str, Any]
    many_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


WORKLOADS: dict[str, Workload] = {
    "cartpole": Workload(
        "cartpole",
        "CartPole-v1",
        dict(
            num_envs=4,
            num_steps=128,
            num_epochs=4,
            num_minibatches=4,
            hidden_sizes=(64, 64),
            activation="tanh",
            lr=2.5e-4,
            total_timesteps=500_000,
        ),
        dict(total_timesteps=8_192),
    ),
    "pendulum": Workload(
        "pendulum", "Pendulum-v1", {}, dict(total_timesteps=16 * 128 * 4), dict(total_timesteps=16 * 128 * 48)
    ),
    "breakout": Workload(
        "breakout",
        "Breakout-MinAtar",
        dict(total_timesteps=1_000_000),
        dict(total_timesteps=64 * 128 * 2),
        dict(total_timesteps=64 * 128 * 8),
    ),
}


# --- subprocesses and peer environments -----------------------------------------------------


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 7200.0) -> dict[str, Any]:
    """Run `cmd`, wait with `os.wait4` and return its result line, peak RSS (MB) and wall time."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
        status, usage = _wait(proc, timeout)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln[len(RESULT_PREFIX) :] for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    record: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    record.update(
        rss_peak_mb=usage.ru_maxrss / 1024 if usage else None,
        wall_s=wall,
        load_avg_1m=[load_before, os.getloadavg()[0]],
    )
    if status != 0 or not lines:
        record["error"] = f"exit status {status}: " + (stderr or stdout)[-2000:]
    return record


def _wait(proc: subprocess.Popen, timeout: float):
    """Wait for `proc` (killing it after `timeout` s); (exit status, rusage of that child alone)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return -9, usage
        time.sleep(0.05)


def ensure_peer_env(peer: Peer, cache: Path) -> Path:
    """The Python of `peer`'s cached venv, creating and installing it on first use."""
    root = cache / peer.name
    python = root / "bin" / "python"
    stamp = root / "ppo_jax_bench.json"
    want = {"install_steps": peer.install_steps, "constraints": peer.constraints}
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(want)):
        return python
    _log(f"creating the {peer.name} environment in {root} (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if peer.constraints:
        (root / "constraints.txt").write_text("\n".join(peer.constraints) + "\n")
        pip += ["--constraint", str(root / "constraints.txt")]
    with open(root / "install.log", "w") as log:
        for step in peer.install_steps:
            if subprocess.run([*pip, *step], stdout=log, stderr=subprocess.STDOUT).returncode:
                raise OSError(f"pip install {' '.join(step)} failed; see {root / 'install.log'}")
    stamp.write_text(json.dumps(want))
    return python


def jax_env() -> dict[str, str]:
    """Environment for JAX children: the deadlock workaround added to any XLA_FLAGS given."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_WORKAROUND}".strip()
    return env


# --- workloads -----------------------------------------------------------------------------


def workload_config(workload: Workload, quick: bool, many: bool = False, **extra: Any) -> dict[str, Any]:
    """The resolved ppo_jax config (as a JSON-able dict) that every implementation is set up from."""
    from ppo_jax.config import default_config

    overrides = {**workload.overrides, **(workload.many_overrides if many and not quick else {})}
    cfg = default_config(workload.env, **{**overrides, **(workload.quick_overrides if quick else {}), **extra})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}


def run_impl(impl: str, config: dict, seeds: int, args, python: Path | None) -> dict[str, Any]:
    """Train `seeds` seeds of `impl` with `config` in a subprocess; the runner's record plus RSS."""
    spec = {"config": config, "seeds": seeds, "eval_episodes": args.eval_episodes}
    if impl in OURS:
        spec["split_cores"] = impl == "ppo_jax"
        cmd, env = [sys.executable, "-m", "ppo_jax.bench", "_worker", json.dumps({"task": "train", **spec})], jax_env()
    else:
        spec["torch_threads"] = args.torch_threads
        cmd = [str(python), str(PEERS_DIR / PEERS[impl].runner), json.dumps(spec)]
        env = jax_env() if impl == "rejax" else dict(os.environ)
    _log(f"{impl} {config['env']} seeds={seeds} steps={config['total_timesteps']}")
    record = run_child(cmd, env, args.timeout)
    record.update(impl=impl, env=config["env"], seeds=seeds, total_timesteps=config["total_timesteps"])
    summarize(record)
    if "error" in record:
        _log(f"  failed: {record['error'][-400:]}")
    else:
        _log(f"  compile {record['compile_s']}  run {record['run_s']:.1f}s  {record['steps_per_s']:.0f} steps/s")
    return record


def summarize(record: dict[str, Any]) -> None:
    """Add steps/s, final return (last 10 % of updates, mean over seeds) and a learning curve."""
    import numpy as np

    if "update_returns" not in record:
        return
    returns = np.array([[np.nan if x is None else x for x in row] for row in record.pop("update_returns")], float)
    steps = record["env_steps_per_seed"] * record["seeds"]
    record["steps_per_s"] = steps / record["run_s"] if record["run_s"] > 0 else None
    tail = max(1, int(round(returns.shape[1] * FINAL_FRACTION)))
    with np.errstate(all="ignore"), _quiet():
        per_seed = np.nanmean(returns[:, -tail:], axis=1)
        curve = np.nanmean(returns, axis=0)
    record["final_return_per_seed"] = [None if np.isnan(x) else round(float(x), 3) for x in per_seed]
    record["final_return"] = _mean_std(per_seed)
    if record.get("eval_returns"):
        record["eval_return"] = _mean_std(np.asarray(record["eval_returns"], float))
    bins = np.array_split(np.arange(len(curve)), min(len(curve), 100))  # mean over bins of updates
    with np.errstate(all="ignore"), _quiet():
        values = [float(np.nanmean(curve[b])) for b in bins]
    record["curve"] = {
        "env_steps": [int((b[-1] + 1) * record["steps_per_update"]) for b in bins],
        "return": [None if np.isnan(v) else round(v, 3) for v in values],
    }


def _mean_std(x) -> dict[str, float | None]:
    import numpy as np

    x = x[~np.isnan(x)]
    if not len(x):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "n": int(len(x))}


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def extrapolated_sb3(one_seed: dict[str, Any], seeds: int) -> dict[str, Any]:
    """SB3 has no vectorisation over seeds: N seeds take N × the 1-seed time (one after another)."""
    record = dict(one_seed)
    record.update(seeds=seeds, run_s=one_seed["run_s"] * seeds, extrapolated=True)
    if one_seed.get("setup_s") is not None:
        record["setup_s"] = one_seed["setup_s"] * seeds
    return record


# --- the ppo_jax worker (runs in a subprocess) ------------------------------------------------


def _config_from(d: dict[str, Any]):
    from ppo_jax.config import PPOConfig

    return PPOConfig().replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _place_seeds(keys):
    """Shard the seed axis of `keys` over as many devices as divide it (all of them if they do)."""
    import jax

    from ppo_jax.runtime.cpu import devices_for_runs
    from ppo_jax.runtime.distributed import put_runs, run_mesh

    count = devices_for_runs(keys.shape[0], jax.device_count())
    return keys if count < 2 else put_runs(keys, run_mesh(jax.devices()[:count]))


def _compile_and_run(cfg, seeds: int) -> tuple[Any, float, float]:
    """`jax.jit(train)` (1 seed) or `jax.jit(jax.vmap(train))`: (result, compile s, run s)."""
    import jax

    from ppo_jax.engine.train import make_train

    train = make_train(cfg)
    keys = _place_seeds(jax.random.split(jax.random.key(cfg.seed), seeds))
    if seeds == 1:
        keys, fn = keys[0], jax.jit(train)
    else:
        fn = jax.jit(jax.vmap(train))
    t0 = time.perf_counter()
    compiled = fn.lower(keys).compile(compiler_options=compiler_options())
    t1 = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    t2 = time.perf_counter()
    if seeds == 1:
        result = jax.tree.map(lambda x: x[None], result)
    return result, t1 - t0, t2 - t1


def evaluate_policy(cfg, state, key, episodes: int):
    """Mean return over `episodes` full episodes of each seed's final stochastic policy.

    `state` is a TrainState with a leading seed axis. Observation statistics are frozen; rewards
    are the raw env rewards. Each episode runs until it terminates or is truncated.
    """
    import functools

    import jax
    import jax.numpy as jnp

    from ppo_jax.engine.evaluate import Acting, evaluate
    from ppo_jax.engine.train import make_context

    ctx = make_context(cfg)
    roll = ctx.rollout
    acting = Acting(ctx.policy, ctx.dist, roll.spec)
    max_steps = int(roll.env_params.max_steps_in_episode)
    play = functools.partial(evaluate, roll.env, roll.env_params, acting)

    def one_seed(params, obs_stats, key):
        stats = obs_stats if cfg.normalize_obs else None
        return jnp.mean(play(params, stats, key, episodes, max_steps, True).returns)

    seeds = jax.tree.leaves(state.params)[0].shape[0]
    fn = jax.jit(jax.vmap(one_seed))
    return [float(x) for x in fn(state.params, state.env.obs_stats, jax.random.split(key, seeds))]


def worker_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train `seeds` seeds of the config; the record the parent summarises."""
    import resource

    from ppo_jax.runtime.cpu import split_runs_over_cores

    seeds = int(spec["seeds"])
    if spec.get("split_cores"):
        split_runs_over_cores(seeds)  # before the first JAX computation

    import jax
    import numpy as np

    cfg = _config_from(spec["config"])
    result, compile_s, run_s = _compile_and_run(cfg, seeds)
    record = {
        "impl": "ppo_jax",
        "seeds": seeds,
        "devices": len(jax.tree.leaves(result.state.params)[0].sharding.device_set),
        "setup_s": None,
        "compile_s": compile_s,
        "run_s": run_s,
        "env_steps_per_seed": cfg.env_steps,
        "steps_per_update": cfg.batch_size,
        "update_returns": np.round(np.asarray(result.metrics["episode_return"], np.float64), 3).tolist(),
        "backend": jax.default_backend(),
        "mismatches": [],
    }
    if spec.get("eval_episodes"):
        try:
            key = jax.random.key(10_000 + cfg.seed)
            record["eval_returns"] = evaluate_policy(cfg, result.state, key, spec["eval_episodes"])
        except Exception as exc:  # the evaluation must not cost the timing result
            record["eval_error"] = repr(exc)
    record["update_returns"] = [[None if np.isnan(x) else x for x in row] for row in record["update_returns"]]
    record["rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["versions"] = _versions(("jax", "jaxlib", "flax", "optax", "gymnax"))
    return record


def _versions(names) -> dict[str, str]:
    from importlib import metadata

    return {n: metadata.version(n) for n in names}


def worker_scaling(spec: dict[str, Any]) -> dict[str, Any]:
    """Steps/s of ppo_jax against the number of seeds and of envs, at a fixed number of updates."""
    base = _config_from(spec["config"])
    points = []
    for axis, values in (("seeds", spec["seeds"]), ("num_envs", spec["num_envs"])):
        for value in values:
            if axis == "num_envs" and value == base.num_envs and 1 in spec["seeds"]:
                points.append({**next(p for p in points if p["seeds"] == 1), "axis": axis})
                continue
            seeds = value if axis == "seeds" else 1
            envs = value if axis == "num_envs" else base.num_envs
            cfg = base.replace(num_envs=envs, total_timesteps=spec["updates"] * envs * base.num_steps)
            run_s, compile_s = _timed_runs(cfg, seeds)
            steps = seeds * cfg.env_steps
            points.append(
                {
                    "axis": axis,
                    "seeds": seeds,
                    "num_envs": envs,
                    "env_steps": steps,
                    "compile_s": compile_s,
                    "run_s": run_s,
                    "steps_per_s": steps / run_s,
                }
            )
            _log(f"  scaling {axis}={value}: {steps / run_s:.0f} steps/s (compile {compile_s:.1f}s)")
    return {"impl": "ppo_jax", "updates": spec["updates"], "points": points}


def _timed_runs(cfg, seeds: int, min_total_s: float = 2.0, max_runs: int = 5) -> tuple[float, float]:
    """(fastest run s, compile s) of the compiled program, repeated until `min_total_s` has passed."""
    import jax

    from ppo_jax.engine.train import make_train

    keys = jax.random.split(jax.random.key(cfg.seed), seeds)
    fn = jax.jit(make_train(cfg)) if seeds == 1 else jax.jit(jax.vmap(make_train(cfg)))
    args = keys[0] if seeds == 1 else keys
    t0 = time.perf_counter()
    compiled = fn.lower(args).compile(compiler_options=compiler_options())
    compile_s = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max_runs and sum(times) < min_total_s:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(args))
        times.append(time.perf_counter() - t0)
    return min(times), compile_s


def worker_matmul(spec: dict[str, Any]) -> dict[str, Any]:
    """Measured float32 matmul throughput (FLOP/s): a large square product and PPO-shaped batches."""
    import jax
    import jax.numpy as jnp

    shapes = {
        "square 1024x1024x1024": ((1024, 1024), (1024, 1024)),
        "batched 32x(128x64 @ 64x64)": ((32, 128, 64), (32, 64, 64)),
        "batched 32x(512x256 @ 256x256)": ((32, 512, 256), (32, 256, 256)),
    }
    out = {}
    for name, (sa, sb) in shapes.items():
        a = jax.random.normal(jax.random.key(0), sa, jnp.float32)
        b = jax.random.normal(jax.random.key(1), sb, jnp.float32) / sb[-2] ** 0.5  # keeps |x| bounded
        # Chain several products per call so that dispatch does not dominate the small shapes.
        reps = spec.get("reps", 20)

        def chain(a, b, reps=reps):
            return jax.lax.fori_loop(0, reps, lambda i, x: jnp.matmul(x, b), a)

        fn = jax.jit(chain)
        jax.block_until_ready(fn(a, b))
        best = float("inf")
        for _ in range(spec.get("repeats", 5)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(a, b))
            best = min(best, time.perf_counter() - t0)
        m, k = sa[-2], sa[-1]
        n = sb[-1]
        batch = sa[0] if len(sa) == 3 else 1
        out[name] = 2.0 * batch * m * k * n * reps / best
    return {"matmul_flops_per_s": out}


def worker_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """Where the time goes: the rollout alone (policy + env steps), rollout + GAE, and the full update.

    Each part is compiled as its own `lax.scan` over the same number of updates, at the given
    numbers of seeds; the update share is the full time minus rollout + GAE.
    """
    import jax

    from ppo_jax.engine.rollout import rollout
    from ppo_jax.engine.train import init_state, make_batch, make_context, make_train

    cfg = _config_from(spec["config"])
    ctx = make_context(cfg)
    hparams = cfg.hyperparams()

    def partial_program(with_gae: bool):
        def run(key):
            state = init_state(ctx, key, hparams)

            def body(carry, key):
                env, traj, _ = rollout(ctx.rollout, state.params, hparams, carry, key)
                out = make_batch(ctx, hparams, state.params, traj).advantages if with_gae else traj.value
                return env, out.sum()

            return jax.lax.scan(body, state.env, jax.random.split(key, cfg.num_updates))[1]

        return run

    programs = {"rollout": partial_program(False), "rollout+gae": partial_program(True), "full": make_train(cfg)}
    rows = []
    for seeds in spec["seeds"]:
        keys = jax.random.split(jax.random.key(0), seeds)
        row = {"seeds": seeds}
        for name, program in programs.items():
            compiled = jax.jit(jax.vmap(program)).lower(keys).compile(compiler_options=compiler_options())
            jax.block_until_ready(compiled(keys))  # warm
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(keys))
                times.append(time.perf_counter() - t0)
            row[name + "_s"] = min(times)
        row["env_steps"] = seeds * cfg.env_steps
        rows.append(row)
        _log(f"  profile seeds={seeds}: {row}")
    return {"profile": rows}


WORKER_TASKS = {"train": worker_train, "scaling": worker_scaling, "matmul": worker_matmul, "profile": worker_profile}


def worker_main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    record = WORKER_TASKS[spec["task"]](spec)
    print(RESULT_PREFIX + json.dumps(record), flush=True)
    return 0


# --- analytic FLOPs ----------------------------------------------------------------------------


def mlp_flops(sizes: list[int]) -> int:
    """Matmul FLOPs of one forward pass of an MLP with layer widths `sizes` (2·in·out per layer)."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def flops_per_env_step(config: dict[str, Any]) -> dict[str, int]:
    """Matmul FLOPs that ppo_jax spends per environment step, by phase.

    rollout: actor + critic forward; gae: the critic on the final observations (bootstrap values);
    update: num_epochs × (forward + backward ≈ 3 × forward) of actor and critic per sample.
    """
    from ppo_jax.envs import env_spec, make_env

    env, params = make_env(config["env"])
    spec = env_spec(env, params)
    obs = 1
    for d in spec.obs_shape:
        obs *= d
    hidden = list(config["hidden_sizes"])
    actor, critic = mlp_flops([obs, *hidden, spec.action_dim]), mlp_flops([obs, *hidden, 1])
    out = {"rollout": actor + critic, "gae": critic, "update": 3 * config["num_epochs"] * (actor + critic)}
    out["total"] = sum(out.values())
    return out


# --- orchestration -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ppo-jax bench", description="Benchmark ppo_jax side by side with rejax and Stable-Baselines3 PPO."
    )
    p.add_argument("--quick", action="store_true", help="reduced smoke run (CartPole, tiny budgets, 4 seeds)")
    p.add_argument("--only", default=",".join(IMPLS), help=f"comma list of implementations ({', '.join(IMPLS)})")
    p.add_argument("--workloads", default=None, help=f"comma list of workloads ({', '.join(WORKLOADS)})")
    p.add_argument("--seeds", type=int, default=None, help="the many-seeds count (default 32; quick 4)")
    p.add_argument("--eval-episodes", type=int, default=32, help="episodes of the common final evaluation (0: off)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads for SB3")
    p.add_argument("--no-scaling", action="store_true", help="skip the ppo_jax scaling and memory sweeps")
    p.add_argument("--no-efficiency", action="store_true", help="skip the FLOP/s and profile measurements")
    p.add_argument("--out", type=Path, default=None, help="output folder (default docs/benchmarks[/quick])")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the peers' virtual environments")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds before a training subprocess is killed")
    p.add_argument(
        "--from-json", type=Path, default=None, help="only re-render README.md and plots from a results.json"
    )
    return p


def sweep_settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(seeds=[1, 4], num_envs=[4, 16], updates=4, memory=[4_096, 16_384], profile_seeds=[1], reps=5)
    return dict(
        seeds=[1, 4, 16, 64, 256],
        num_envs=[4, 16, 64, 256, 1024],
        updates=32,
        memory=[50_000, 500_000, 5_000_000],
        profile_seeds=[1, 32],
        reps=20,
    )


def run_workloads(args, impls: list[str], pythons: dict[str, Path], many: int) -> list[dict[str, Any]]:
    """Every implementation on every workload at 1 seed and at `many` seeds, one after another.

    SB3 trains seeds one after another, so its many-seed row is N × a 1-seed run of the same config.
    """
    runs: list[dict[str, Any]] = []
    names = args.workloads.split(",") if args.workloads else (["cartpole"] if args.quick else list(WORKLOADS))
    for name in names:
        for seeds in (1, many):
            config = workload_config(WORKLOADS[name], args.quick, many=seeds > 1)
            for impl in impls:
                if impl == "ppo_jax_1dev" and seeds == 1:  # one seed always runs on one device
                    continue
                if impl == "sb3" and seeds > 1:
                    one = next((r for r in runs if r["impl"] == "sb3" and r["config"] == config), None)
                    if one is None:
                        one = {**run_impl(impl, config, 1, args, pythons.get(impl)), "workload": name, "config": config}
                    if "error" not in one:
                        runs.append({**extrapolated_sb3(one, seeds), "workload": name, "config": config})
                    continue
                record = run_impl(impl, config, seeds, args, pythons.get(impl))
                runs.append({**record, "workload": name, "config": config})
    return runs


def run_sweeps(args, settings: dict[str, Any]) -> dict[str, Any]:
    """ppo_jax alone: throughput against seeds and num_envs; peak RSS against total_timesteps."""
    config = workload_config(WORKLOADS["cartpole"], quick=False)
    spec = {"task": "scaling", "config": config, **{k: settings[k] for k in ("seeds", "num_envs", "updates")}}
    _log("scaling: steps/s against seeds and num_envs")
    scaling = run_child([sys.executable, "-m", "ppo_jax.bench", "_worker", json.dumps(spec)], jax_env(), args.timeout)
    memory = []
    for total in settings["memory"]:
        cfg = workload_config(WORKLOADS["cartpole"], quick=False, total_timesteps=total)
        spec = {"task": "train", "config": cfg, "seeds": 1, "eval_episodes": 0}
        _log(f"memory: total_timesteps={total}")
        record = run_child(
            [sys.executable, "-m", "ppo_jax.bench", "_worker", json.dumps(spec)], jax_env(), args.timeout
        )
        record.pop("update_returns", None)
        memory.append({"total_timesteps": total, **{k: record.get(k) for k in ("rss_peak_mb", "run_s", "error")}})
    return {"scaling": scaling, "memory": memory}


def run_efficiency(args, settings: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Measured matmul throughput, analytic FLOP/s achieved by each ppo_jax run, and a time split."""
    _log("efficiency: matmul throughput")
    spec = {"task": "matmul", "reps": settings["reps"]}
    matmul = run_child([sys.executable, "-m", "ppo_jax.bench", "_worker", json.dumps(spec)], jax_env(), args.timeout)
    peak = max((matmul.get("matmul_flops_per_s") or {"none": float("nan")}).values())
    achieved = []
    for r in runs:
        if r["impl"] == "ppo_jax" and r.get("steps_per_s"):
            flops = flops_per_env_step(r["config"])
            rate = flops["total"] * r["steps_per_s"]
            achieved.append(
                {
                    "workload": r["workload"],
                    "seeds": r["seeds"],
                    "flops_per_env_step": flops,
                    "achieved_flops_per_s": rate,
                    "fraction_of_matmul_peak": rate / peak,
                }
            )
    cfg = workload_config(WORKLOADS["cartpole"], quick=False, total_timesteps=(8 if args.quick else 50) * 512)
    _log("efficiency: rollout / GAE / update split")
    spec = {"task": "profile", "config": cfg, "seeds": settings["profile_seeds"]}
    profile = run_child([sys.executable, "-m", "ppo_jax.bench", "_worker", json.dumps(spec)], jax_env(), args.timeout)
    return {"matmul": matmul, "matmul_peak_flops_per_s": peak, "achieved": achieved, "profile": profile}


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True)
        return out.stdout.decode().strip() or None
    except OSError:
        return None


def run_benchmark(argv: list[str] | None = None) -> int:
    """The `ppo-jax bench` entry point: run everything, write results.json, README.md and plots."""
    args = build_parser().parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        write_outputs(report, args.out or args.from_json.parent)
        return 0
    impls = [i.strip() for i in args.only.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        build_parser().error(f"unknown implementation(s) {', '.join(unknown)}; known: {', '.join(IMPLS)}")
    out = args.out or REPO_ROOT / "docs" / "benchmarks" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    settings = sweep_settings(args.quick)
    many = args.seeds or (4 if args.quick else 32)
    report: dict[str, Any] = {
        "command": " ".join(["scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "git_commit": _git_commit(),
        "xla_flags_for_jax_children": XLA_WORKAROUND,
        "torch_threads": args.torch_threads,
        "final_fraction": FINAL_FRACTION,
        "eval_episodes": args.eval_episodes,
        "peer_errors": {},
    }
    pythons = {}
    for impl in impls:
        if impl in PEERS and not (PEERS_DIR / PEERS[impl].runner).exists():
            report["peer_errors"][impl] = f"runner {PEERS_DIR / PEERS[impl].runner} not found (needs a source checkout)"
        elif impl in PEERS:
            try:
                pythons[impl] = ensure_peer_env(PEERS[impl], args.cache)
            except (subprocess.CalledProcessError, OSError) as exc:
                report["peer_errors"][impl] = f"environment setup failed: {exc}"
    impls = [i for i in impls if i not in report["peer_errors"]]
    t0 = time.perf_counter()
    report["runs"] = run_workloads(args, impls, pythons, many)
    if "ppo_jax" in impls and not args.no_scaling:
        report.update(run_sweeps(args, settings))
    if "ppo_jax" in impls and not args.no_efficiency:
        report["efficiency"] = run_efficiency(args, settings, report["runs"])
    report["total_s"] = time.perf_counter() - t0
    report["machine"]["load_avg_end"] = os.getloadavg()
    write_outputs(report, out)
    _log(f"wrote {out}/results.json, README.md and plots in {report['total_s']:.0f}s")
    return 0


# --- outputs -----------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, dict):  # mean/std
        if x.get("mean") is None:
            return "–"
        return f"{x['mean']:.{digits}f}" + (f" ± {x['std']:.{digits}f}" if x.get("n", 1) > 1 else "")
    if isinstance(x, float) and (abs(x) >= 1e4 or (digits == 0 and abs(x) >= 1e3)):
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ratio(runs: list[dict[str, Any]], r: dict[str, Any]) -> str:
    base = next(
        (b for b in runs if b["impl"] == "ppo_jax" and b["workload"] == r["workload"] and b["seeds"] == r["seeds"]),
        None,
    )
    if not base or not base.get("steps_per_s") or not r.get("steps_per_s"):
        return "–"
    return f"{base['steps_per_s'] / r['steps_per_s']:.2f}×"


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | implementation | seeds | env steps / seed | compile s | run s | env-steps/s | ppo_jax speed-up "
        "| peak RSS MB | final return (last 10 %) | eval return |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['workload']} | {LABELS[r['impl']]} | {r['seeds']} | failed: see results.json |||||||")
            continue
        note = " (×N of 1 seed)" if r.get("extrapolated") else ""
        label = LABELS[r["impl"]] + (f" ({r['devices']} devices)" if (r.get("devices") or 1) > 1 else "")
        compile_s = _fmt(r.get("compile_s")) if r.get("compile_s") is not None else "n/a"
        lines.append(
            f"| {r['workload']} | {label} | {r['seeds']}{note} | {r['env_steps_per_seed']:,} "
            f"| {compile_s} | {_fmt(r['run_s'])} | {_fmt(r.get('steps_per_s'), 0)} | {_ratio(runs, r)} "
            f"| {_fmt(r.get('rss_peak_mb'), 0)} | {_fmt(r.get('final_return'))} | {_fmt(r.get('eval_return'))} |"
        )
    return lines


def differences(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for impl in PEERS:
        notes = sorted({m for r in runs if r["impl"] == impl for m in r.get("mismatches", [])})
        if notes:
            lines.append(f"- **{LABELS[impl]}**: " + "; ".join(notes) + ".")
    return lines


def sweeps_section(report: dict[str, Any]) -> list[str]:
    scaling = report.get("scaling") or {}
    updates = scaling.get("updates", "a fixed number of")
    lines = [f"## ppo_jax scaling (CartPole settings, {updates} updates per point, fastest of repeated runs)", ""]
    if "points" in scaling:
        lines += [
            "| seeds | num_envs | env steps | compile s | run s | env-steps/s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for p in scaling["points"]:
            lines.append(
                f"| {p['seeds']} | {p['num_envs']} | {p['env_steps']:,} | {_fmt(p['compile_s'])} "
                f"| {_fmt(p['run_s'], 2)} | {_fmt(p['steps_per_s'], 0)} |"
            )
    elif scaling:
        lines.append(f"Scaling run failed: {scaling.get('error', '')[-300:]}")
    if report.get("memory"):
        lines += ["", "Peak RSS against total_timesteps (1 seed, CartPole):", ""]
        lines += ["| total_timesteps | run s | peak RSS MB |", "|---:|---:|---:|"]
        for m in report["memory"]:
            lines.append(f"| {m['total_timesteps']:,} | {_fmt(m.get('run_s'))} | {_fmt(m.get('rss_peak_mb'), 0)} |")
    return lines + [""]


def efficiency_section(eff: dict[str, Any]) -> list[str]:
    lines = ["## Efficiency", "", "Measured float32 matmul throughput on this machine (same run):", ""]
    lines += ["| product | GFLOP/s |", "|---|---:|"]
    for name, rate in (eff["matmul"].get("matmul_flops_per_s") or {}).items():
        lines.append(f"| {name} | {rate / 1e9:.1f} |")
    lines += ["", "ppo_jax achieved matmul FLOP/s (analytic count × measured env-steps/s):", ""]
    lines += ["| workload | seeds | kFLOP / env step (rollout, gae, update) | GFLOP/s | of best matmul |"]
    lines += ["|---|---:|---|---:|---:|"]
    for a in eff["achieved"]:
        f = a["flops_per_env_step"]
        split = f"{f['total'] / 1e3:.0f} ({f['rollout'] / 1e3:.0f}, {f['gae'] / 1e3:.0f}, {f['update'] / 1e3:.0f})"
        lines.append(
            f"| {a['workload']} | {a['seeds']} | {split} | {a['achieved_flops_per_s'] / 1e9:.2f} "
            f"| {100 * a['fraction_of_matmul_peak']:.1f} % |"
        )
    rows = (eff.get("profile") or {}).get("profile")
    if rows:
        lines += ["", "Where the time goes (CartPole settings; each part compiled and timed on its own):", ""]
        lines += ["| seeds | rollout s | + GAE s | full s | rollout share | GAE share | update share |"]
        lines += ["|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            full, roll, gae = r["full_s"], r["rollout_s"], r["rollout+gae_s"]
            lines.append(
                f"| {r['seeds']} | {roll:.2f} | {gae:.2f} | {full:.2f} | {100 * roll / full:.0f} % "
                f"| {100 * max(gae - roll, 0) / full:.0f} % | {100 * max(full - gae, 0) / full:.0f} % |"
            )
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmarks: ppo_jax, rejax and Stable-Baselines3 PPO",
        "",
        f"Command: `{report['command']}` — started {report['started']}, {report['total_s'] / 60:.0f} min in all.",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; CPU only. Load average "
        f"{m['load_avg_start'][0]:.1f} at the start, {m['load_avg_end'][0]:.1f} at the end (per run in results.json).",
        "",
        "Each training run is its own subprocess, run one after another. *compile s*: "
        "`jax.jit(train).lower(key).compile()` (`jax.vmap(train)` for many seeds); *run s*: one call of the "
        "compiled program; *env-steps/s*: all seeds' env steps / run s (compile excluded); *peak RSS*: "
        "`ru_maxrss` of the subprocess from `os.wait4`; *final return*: mean episodic return of the episodes that "
        f"ended in the last {FINAL_FRACTION:.0%} of updates, mean ± std over seeds; *eval return*: "
        f"{report['eval_episodes']} episodes of the final stochastic policy per seed, normalisation frozen. "
        "*ppo_jax speed-up*: ppo_jax env-steps/s ÷ this row's.",
        "",
        *runs_table(report["runs"]),
        "",
        "## Where the peers differ from ppo_jax's settings",
        "",
        *differences(report["runs"]),
        f"- SB3 runs with `torch.set_num_threads({report['torch_threads']})`; its many-seed rows are N × the "
        "1-seed run of the same config (it trains seeds one after another), with that run's return.",
        "- Pendulum and Breakout many-seed rows use a shorter budget per seed (see env steps / seed): their "
        "returns are not final returns of the full budget.",
        "- ppo_jax splits a many-seed run over the CPU cores, each core a JAX device (`jax_num_cpu_devices`, "
        "seed axis sharded), as `ppo-jax train --seeds N` does; *ppo_jax, 1 device* is the same program on one "
        "device. The peers run as they ship, on one device.",
        f"- Extra XLA_FLAGS for the JAX subprocesses (ppo_jax and rejax alike): "
        f"`{report.get('xla_flags_for_jax_children') or 'none'}`.",
        "",
    ]
    if report.get("peer_errors"):
        lines += ["Peers not run: " + "; ".join(f"{k}: {v}" for k, v in report["peer_errors"].items()), ""]
    lines += sweeps_section(report)
    if report.get("efficiency"):
        lines += efficiency_section(report["efficiency"])
    lines += ["Plots: `throughput.png`, `returns.png`, `scaling.png`. All numbers: `results.json`.", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "README.md").write_text(markdown(report))
    try:
        plot_all(report, out)
    except Exception as exc:  # plots are a convenience; the tables are written already
        _log(f"plotting failed: {exc!r}")


COLORS = {"ppo_jax": "tab:blue", "ppo_jax_1dev": "tab:cyan", "rejax": "tab:orange", "sb3": "tab:green"}


def plot_all(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["runs"] if "error" not in r]
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    seeds = sorted({r["seeds"] for r in runs})
    fig, axes = plt.subplots(1, len(seeds), figsize=(5 * len(seeds), 3.8), squeeze=False)
    for ax, s in zip(axes[0], seeds, strict=True):
        for i, impl in enumerate(IMPLS):
            vals = [
                next(
                    (
                        r.get("steps_per_s") or 0
                        for r in runs
                        if r["impl"] == impl and r["workload"] == w and r["seeds"] == s
                    ),
                    0,
                )
                for w in workloads
            ]
            ax.bar(
                [j + 0.2 * (i - 1.5) for j in range(len(workloads))], vals, 0.2, label=LABELS[impl], color=COLORS[impl]
            )
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_yscale("log")
        ax.set_title(f"{s} seed{'s' if s > 1 else ''}: env-steps/s (compile excluded)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(IMPLS), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    _plot_returns(plt, runs, workloads, out)
    _plot_scaling(plt, report, out)


def _plot_returns(plt, runs, workloads, out: Path) -> None:
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.8), squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        for r in runs:
            if r["workload"] != w or "curve" not in r or r.get("extrapolated"):
                continue
            style = "-" if r["seeds"] > 1 else ":"
            label = f"{LABELS[r['impl']]}, {r['seeds']} seed{'s' if r['seeds'] > 1 else ''}"
            ax.plot(r["curve"]["env_steps"], _smooth(r["curve"]["return"]), style, color=COLORS[r["impl"]], label=label)
        ax.set_title(f"{w}: episodic return (mean over seeds, smoothed)")
        ax.set_xlabel("env steps per seed")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "returns.png", dpi=110)
    plt.close(fig)


def _smooth(values: list, window: int = 5) -> list[float]:
    """Trailing mean over `window` points, ignoring missing ones (None)."""
    out = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(seen) / len(seen) if seen else float("nan"))
    return out


def _plot_scaling(plt, report: dict[str, Any], out: Path) -> None:
    points = (report.get("scaling") or {}).get("points") or []
    memory = [m for m in report.get("memory") or [] if m.get("rss_peak_mb")]
    if not points and not memory:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, axis in zip(axes[:2], ("seeds", "num_envs"), strict=True):
        pts = [p for p in points if p["axis"] == axis]
        ax.plot([p[axis] for p in pts], [p["steps_per_s"] for p in pts], "o-", color=COLORS["ppo_jax"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("env-steps/s")
        ax.set_title(f"ppo_jax throughput against {axis}")
    axes[2].plot([m["total_timesteps"] for m in memory], [m["rss_peak_mb"] for m in memory], "o-")
    axes[2].set_xscale("log")
    axes[2].set_ylim(0, max([m["rss_peak_mb"] for m in memory] + [1]) * 1.2)
    axes[2].set_xlabel("total_timesteps (1 seed)")
    axes[2].set_ylabel("peak RSS MB")
    axes[2].set_title("ppo_jax peak memory against budget")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    return run_benchmark(argv)


if __name__ == "__main__":
    sys.exit(main())
