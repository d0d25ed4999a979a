"""The work done in child processes: `python scripts/benchmark.py _worker <json>` runs one task of
`WORKER_TASKS` and prints its record as one `BENCH_RESULT <json>` line on stdout.

Tasks: `train` (one ppo_jax training run, timed after compiling, with a common evaluation),
`scaling` (steps/s against seeds and num_envs), `matmul` (measured matmul throughput), `profile`
(rollout / GAE / update split) and `flops` (FLOPs per env step from XLA's cost analysis).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.peers import RESULT_PREFIX, log
from ppo_jax.runtime.cpu import compiler_options


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
            log(f"  scaling {axis}={value}: {steps / run_s:.0f} steps/s (compile {compile_s:.1f}s)")
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


def _partial_program(ctx, hparams, with_gae: bool):
    """`run(key)`: the rollouts of every update (and the GAE targets when `with_gae`), no update."""
    import jax

    from ppo_jax.engine.rollout import rollout
    from ppo_jax.engine.train import init_state, make_batch

    def run(key):
        state = init_state(ctx, key, hparams)

        def body(carry, key):
            env, traj, _ = rollout(ctx.rollout, state.params, hparams, carry, key)
            if not with_gae:
                return env, traj.value.sum()
            return env, make_batch(ctx, hparams, state.params, traj, carry.policy_carry).advantages.sum()

        return jax.lax.scan(body, state.env, jax.random.split(key, ctx.config.num_updates))[1]

    return run


def worker_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """Where the time goes: the rollout alone (policy + env steps), rollout + GAE, and the full update.

    Each part is compiled as its own `lax.scan` over the same number of updates, at the given
    numbers of seeds; the update share is the full time minus rollout + GAE.
    """
    import jax

    from ppo_jax.engine.train import make_context, make_train

    cfg = _config_from(spec["config"])
    ctx = make_context(cfg)
    hparams = cfg.hyperparams()
    programs = {
        "rollout": _partial_program(ctx, hparams, False),
        "rollout+gae": _partial_program(ctx, hparams, True),
        "full": make_train(cfg),
    }
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
        log(f"  profile seeds={seeds}: {row}")
    return {"profile": rows}


def worker_flops(spec: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per env step (`flops.flops_per_env_step`) of each config in `spec["configs"]`."""
    from bench.flops import flops_per_env_step

    return {"flops": [flops_per_env_step(_config_from(c)) for c in spec["configs"]]}


WORKER_TASKS = {
    "train": worker_train,
    "scaling": worker_scaling,
    "matmul": worker_matmul,
    "profile": worker_profile,
    "flops": worker_flops,
}


def worker_main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    record = WORKER_TASKS[spec["task"]](spec)
    print(RESULT_PREFIX + json.dumps(record), flush=True)
    return 0
