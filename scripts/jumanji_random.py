"""The return of a uniformly random legal-move policy on a Jumanji env, stepped with Jumanji's own API.

    python scripts/jumanji_random.py Game2048-v1 --episodes 1000

A reference for a row without a published return: each episode draws every action uniformly among the legal
ones (`observation.action_mask`), through `jumanji.make(NAME)`'s own `reset` and `step` (no ppo_jax code), and
runs until Jumanji ends it (a step of type LAST). Prints the mean and standard deviation of the undiscounted
return and of the episode length, and the extras Jumanji reports at the end (e.g. 2048's `highest_tile`).
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import jumanji
from jumanji.types import StepType


def play(env, key: jax.Array, max_steps: int):
    """One episode of the random legal-move policy: (return, length, extras at the end)."""
    key, reset_key = jax.random.split(key)
    state, timestep = env.reset(reset_key)

    def cond(carry):
        _, timestep, _, _, t = carry
        return (timestep.step_type != StepType.LAST) & (t < max_steps)

    def body(carry):
        state, timestep, key, ret, t = carry
        key, act_key = jax.random.split(key)
        mask = timestep.observation.action_mask
        action = jax.random.categorical(act_key, jnp.where(mask, 0.0, -jnp.inf))
        state, timestep = env.step(state, action)
        return state, timestep, key, ret + timestep.reward, t + 1

    init = (state, timestep, key, jnp.float32(0), jnp.int32(0))
    _, timestep, _, ret, length = jax.lax.while_loop(cond, body, init)
    return ret, length, timestep.extras


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("env", help="a Jumanji id, e.g. Game2048-v1")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=100_000, help="safety cap on an episode's length")
    p.add_argument("--json", default="", help="also write the figures to this file")
    args = p.parse_args(argv)
    env = jumanji.make(args.env)
    keys = jax.random.split(jax.random.key(args.seed), args.episodes)
    ret, length, extras = jax.jit(jax.vmap(lambda k: play(env, k, args.max_steps)))(keys)
    out = {
        "env": args.env,
        "episodes": args.episodes,
        "seed": args.seed,
        "return_mean": float(ret.mean()),
        "return_std": float(ret.std()),
        "length_mean": float(length.mean()),
        "length_max": int(length.max()),
        "capped": int((length >= args.max_steps).sum()),
    }
    for name, values in extras.items():
        values = jnp.ravel(values)
        uniq, counts = jnp.unique(values, return_counts=True)
        out[f"{name}_counts"] = {str(u.item()): int(c) for u, c in zip(uniq, counts, strict=True)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
