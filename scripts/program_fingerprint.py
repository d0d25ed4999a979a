"""SHA-256 of the lowered training program (StableHLO text) of the default configs.

    PYTHONPATH=<tree> python scripts/program_fingerprint.py --seeds 1,32

Two source trees that print the same fingerprints compile the same program: their speed can
differ only by noise. One line per (family, seed count): family, seeds, fingerprint, text size.
"""

from __future__ import annotations

import argparse
import hashlib

import jax
import numpy as np

import ppo_jax

CASES = (("mlp", "CartPole-v1"), ("gru", "StatelessCartPole-v1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,32", help="comma-separated seed counts")
    args = parser.parse_args()
    for network, env in CASES:
        for seeds in (int(s) for s in args.seeds.split(",")):
            config = ppo_jax.default_config(env, network=network)
            keys = jax.vmap(jax.random.key)(np.arange(seeds, dtype=np.uint32))
            text = jax.jit(ppo_jax.make_train_batch(config)).lower(keys).as_text()
            print(network, seeds, hashlib.sha256(text.encode()).hexdigest()[:16], len(text), flush=True)


if __name__ == "__main__":
    main()
