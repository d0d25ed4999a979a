"""Navix's published PPO baseline rerun with rejax, in rejax's own virtual environment.

    python -m venv VENV && VENV/bin/pip install rejax==0.1.3 gymnax==0.0.9 jax==0.10.2 navix==0.7.4
    VENV/bin/python scripts/peers/rejax_navix_baseline.py navix/Navix-DoorKey-8x8-v0 --seeds 2

Trains rejax's PPO with the `ppo:` block of epignatelli/navix
`baselines/rejax/configs/navix_<task>_1m.yaml` (the same block for DoorKey-8x8 and Empty-16x16; the
results table's `NAVIX_PPO` flags), one program for all seeds (`jax.vmap` over keys), and prints one
JSON line: per seed, the mean return of each of rejax's periodic evaluations (128 episodes of the
sampled policy, every `eval_freq` steps), the way Navix's logged baseline was made (20 episodes there).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import metadata

import jax
import jax.numpy as jnp
from rejax import PPO

NAVIX_PPO_BLOCK = dict(
    agent_kwargs={"activation": "tanh"},
    num_envs=16,
    num_steps=128,
    num_epochs=2,
    num_minibatches=1,
    learning_rate=3e-4,
    max_grad_norm=1,
    total_timesteps=1_048_576,
    eval_freq=262_144,
    gamma=0.95,
    gae_lambda=0.9,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    normalize_observations=False,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("env", help="a rejax env id, e.g. navix/Navix-DoorKey-8x8-v0")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="key of the first seed's split")
    args = p.parse_args()
    algo = PPO.create(env=args.env, **NAVIX_PPO_BLOCK)
    start = time.perf_counter()
    _, (_, returns) = jax.jit(jax.vmap(algo.train))(jax.random.split(jax.random.key(args.seed), args.seeds))
    per_eval = jnp.mean(returns, axis=-1)  # [seeds, evaluations]
    print(
        json.dumps(
            {
                "env": args.env,
                "seconds": time.perf_counter() - start,
                "eval_steps": [i * NAVIX_PPO_BLOCK["eval_freq"] for i in range(per_eval.shape[1])],
                "eval_return_per_seed": per_eval.tolist(),
                "final_per_seed": per_eval[:, -1].tolist(),
                "versions": {name: metadata.version(name) for name in ("rejax", "navix", "gymnax", "jax")},
            }
        )
    )


if __name__ == "__main__":
    main()
