"""Side-by-side PPO benchmark: ppo_jax, rejax and Stable-Baselines3 on the same settings.

    python scripts/benchmark.py            # full run (tens of minutes on 2 CPU cores)
    python scripts/benchmark.py --quick    # smoke run, about two minutes
    python scripts/benchmark.py --only ppo_jax,rejax --workloads cartpole

Writes results.json, README.md and plots to docs/benchmarks/ (docs/benchmarks/quick/ with --quick).
The reusable core is `ppo_jax.bench.run_benchmark`.
"""

import sys

from ppo_jax.bench import run_benchmark

if __name__ == "__main__":
    sys.exit(run_benchmark(sys.argv[1:]))
