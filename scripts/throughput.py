"""Env-steps/s of ppo_jax against the number of seeds, compile time separate.

    python scripts/throughput.py --seeds 1,32,256,2048 --env CartPole-v1 --total-timesteps 500000
    python scripts/throughput.py --seeds 1,32 --total-timesteps 500000,50000 --no-fast-paths

Each seed count is its own compiled program (`make_train_batch`, all seeds vmapped); the run is
timed after compiling (`jit(...).lower(...).compile()`), with the result blocked on. Prints one
line per seed count and writes the figures as JSON with `--json PATH`. `--total-timesteps` is
per seed: one value for every seed count, or one per seed count. `--no-fast-paths` runs the
plain Flax/JAX path (`ppo_jax.fast_paths`); without it the script sets no switch, so it also
runs against versions of the package that have none.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import ppo_jax
from ppo_jax.runtime.cpu import compiler_options
from ppo_jax.runtime.files import final_returns


def measure(env: str, num_seeds: int, total_timesteps: int, repeats: int, plain: bool = False) -> dict:
    switch = {"fast_paths": False} if plain else {}
    config = ppo_jax.default_config(env, total_timesteps=total_timesteps, **switch)
    train = ppo_jax.make_train_batch(config)
    keys = jax.vmap(jax.random.key)(np.arange(num_seeds, dtype=np.uint32))
    start = time.perf_counter()
    options = compiler_options(False) if plain else compiler_options()
    compiled = jax.jit(train).lower(keys).compile(compiler_options=options)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(keys))
        times.append(time.perf_counter() - start)
    run_s = float(np.median(times))
    finals = final_returns(np.asarray(result.metrics["episode_return"]))
    return {
        "env": env,
        "fast_paths": not plain,
        "seeds": num_seeds,
        "steps_per_seed": config.env_steps,
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "run_seconds_all": times,
        "env_steps_per_second": num_seeds * config.env_steps / run_s,
        "final_return_mean": float(np.nanmean(finals)),
        "final_return_min": float(np.nanmin(finals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", default="1,32", help="comma-separated seed counts")
    parser.add_argument("--total-timesteps", default="500000", help="per seed; comma-separated: one per seed count")
    parser.add_argument("--no-fast-paths", action="store_true", help="the plain Flax/JAX path (ppo_jax.fast_paths)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"backend {jax.default_backend()} device {device.device_kind} x{len(jax.devices())}", flush=True)
    rows = []
    seeds = [int(x) for x in args.seeds.split(",")]
    budgets = [int(x) for x in args.total_timesteps.split(",")]
    budgets = budgets * len(seeds) if len(budgets) == 1 else budgets
    if len(budgets) != len(seeds):
        parser.error("--total-timesteps: one value, or one per seed count")
    for s, budget in zip(seeds, budgets, strict=True):
        row = measure(args.env, s, budget, args.repeats, args.no_fast_paths)
        row["device"] = device.device_kind
        rows.append(row)
        print(
            f"{args.env} seeds={s:>5} compile {row['compile_seconds']:6.1f} s  run {row['run_seconds']:7.2f} s  "
            f"{row['env_steps_per_second']:>14,.0f} env-steps/s  final return {row['final_return_mean']:.1f} "
            f"(min {row['final_return_min']:.1f})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
