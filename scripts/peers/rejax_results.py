"""rejax 0.1.3 PPO for the results table: training returns per update and a deterministic evaluation.

Runs in rejax's own virtual environment (gymnax 0.0.9): python rejax_results.py '<spec json>'.
The spec carries a resolved ppo_jax `config` (the run's config.json), `seeds` (a list: seed s
trains from `jax.random.key(s)`) and `eval_episodes`. rejax is configured from the ppo_jax config
as `rejax_runner.build` does (its mismatches are reported). Prints one line `RESULTS {json}`:
per seed the mean return of the episodes that ended in each update, and the mean return of
`eval_episodes` episodes of the mode action (argmax of the logits, or the clipped Gaussian mean),
as `ppo-jax eval` plays them.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rejax.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rejax_runner import build, make_train  # noqa: E402


def mode_act(algo, ts, discrete: bool):
    """act(obs, rng) -> the deterministic action of the final policy in `ts`."""

    def act(obs, rng):
        if getattr(algo, "normalize_observations", False):
            obs = algo.normalize_obs(ts.obs_rms_state, obs)
        dist = algo.actor.apply(ts.actor_ts.params, jnp.expand_dims(obs, 0), method="_action_dist")
        action = dist.mode()
        if not discrete:
            low, high = algo.actor.action_range
            action = jnp.clip(action, low, high)
        return jnp.squeeze(action)

    return act


def evaluate_seeds(algo, states, keys, episodes: int, discrete: bool) -> np.ndarray:
    """Mean return over `episodes` deterministic episodes, per seed [S]."""

    def one(ts, key):
        _, returns = evaluate(mode_act(algo, ts, discrete), key, algo.env, algo.env_params, episodes)
        return jnp.mean(returns)

    return np.asarray(jax.jit(jax.vmap(one))(states, keys))


def main() -> None:
    spec = json.loads(sys.argv[1])
    config, seeds = spec["config"], [int(s) for s in spec["seeds"]]
    num_updates = config["total_timesteps"] // (config["num_envs"] * config["num_steps"])
    algo, mismatches = build(config, num_updates)
    discrete = hasattr(algo.env.action_space(algo.env_params), "n")
    keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
    t0 = time.perf_counter()
    states, returns = jax.block_until_ready(jax.jit(jax.vmap(make_train(algo, num_updates)))(keys))
    seconds = time.perf_counter() - t0
    eval_keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32) + np.uint32(10_000))
    eval_returns = evaluate_seeds(algo, states, eval_keys, int(spec["eval_episodes"]), discrete)
    steps_per_update = config["num_envs"] * config["num_steps"]
    result = {
        "impl": "rejax",
        "seeds": seeds,
        "env_steps": [(u + 1) * steps_per_update for u in range(num_updates)],
        "update_returns": [[None if np.isnan(x) else float(x) for x in row] for row in np.asarray(returns)],
        "eval_returns": [float(x) for x in eval_returns],
        "eval_policy": "deterministic (mode)",
        "eval_episodes": int(spec["eval_episodes"]),
        "seconds": seconds,
        "versions": {p: metadata.version(p) for p in ("rejax", "gymnax", "jax", "flax", "optax")},
        "mismatches": mismatches,
    }
    print("RESULTS " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
