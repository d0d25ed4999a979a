"""Env-steps/s of ppo_jax against the number of seeds, compile time separate.

    python scripts/throughput.py --seeds 1,32,256,2048 --env CartPole-v1 --total-timesteps 500000

Each seed count is its own compiled program (`make_train_batch`, all seeds vmapped); the run is
timed after compiling (`jit(...).lower(...).compile()`), with the result blocked on. Prints one
line per seed count and writes the figures as JSON with `--json PATH`.
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


def measure(env: str, num_seeds: int, total_timesteps: int, repeats: int) -> dict:
    config = ppo_jax.default_config(env, total_timesteps=total_timesteps)
    train = ppo_jax.make_train_batch(config)
    keys = jax.vmap(jax.random.key)(np.arange(num_seeds, dtype=np.uint32))
    start = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile(compiler_options=compiler_options())
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
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"backend {jax.default_backend()} device {device.device_kind} x{len(jax.devices())}", flush=True)
    rows = []
    for s in (int(x) for x in args.seeds.split(",")):
        row = measure(args.env, s, args.total_timesteps, args.repeats)
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
