"""Sampled and trained tokens per second of the default `ppo-jax rlhf` model, against the machine's
measured float32 matmul FLOP/s.

    python scripts/rlhf_throughput.py [--out docs/benchmarks/rlhf_throughput.json] [--repeats 5]

1. Matmul: C = A·B with A, B float32 [n, n] (2n³ FLOP) for n = 256, 512, 1024, jitted, the best of
   `repeats` timed calls after a warm-up: the machine's matmul FLOP/s (the best n).
2. Sampling: the default model's KV-cached sampler on `rl_batch` prompts (one RL update's
   completions): completion positions per second (`rl_batch` × `completion_len`, the sampler
   runs every position) and valid tokens per second (up to and including EOS).
3. Training: one gradient step of the RL loss on one minibatch (`rl_batch / num_minibatches`
   completions, prompt + completion positions each) and one pretraining step (`pretrain_batch`
   sequences): token positions per second.

Model FLOP per token ≈ 2·N forward and 6·N for a training step (N: parameters outside the
embedding tables, Kaplan et al. 2020), plus attention, 2·layers·T·d per token forward (T the
sequence length); the script reports those FLOP/s and their fraction of the matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.core.token_losses import completion_mask
from ppo_jax.rlhf import RLHFConfig, make_setup
from ppo_jax.rlhf.finetune import rl_loss
from ppo_jax.rlhf.pretrain import next_token_loss
from ppo_jax.rlhf.rollout import RLParams, TrainBatch


def best_seconds(fn, repeats: int) -> float:
    """Best wall seconds of `repeats` calls of fn() after one warm-up call (compile)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops(repeats: int) -> dict[str, float]:
    """float32 matmul FLOP/s per size n (2n³ / best seconds)."""
    out = {}
    for n in (256, 512, 1024):
        a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
        f = jax.jit(jnp.matmul)
        out[str(n)] = 2 * n**3 / best_seconds(lambda f=f, a=a, b=b: f(a, b), repeats)
    return out


def non_embedding_params(params) -> int:
    """Parameters outside embedding tables (leaves whose path names an embedding)."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if "embed" not in jax.tree_util.keystr(path).lower():
            total += int(np.prod(leaf.shape))
    return total


def measure(config: RLHFConfig, repeats: int) -> dict[str, float]:
    setup = make_setup(config)
    task, lm = setup.task, setup.policy
    params = lm.init(jax.random.key(0))
    prompts = task.prompts(jax.random.key(1), config.rl_batch)
    sample = jax.jit(functools.partial(lm.sample_fn, length=task.completion_len, eos_id=task.eos_id))
    completions = sample(params, prompts, jax.random.key(2))
    sample_s = best_seconds(lambda: sample(params, prompts, jax.random.key(2)), repeats)
    valid = float(jnp.sum(completion_mask(completions, task.eos_id)))

    mb = config.rl_batch // config.num_minibatches
    rl_setup = make_setup(config.static_rl_config())
    hp = config.rl_hyperparams()
    zeros = jnp.zeros(completions[:mb].shape, jnp.float32)
    batch = TrainBatch(prompts[:mb], completions[:mb], jnp.ones_like(zeros), zeros, zeros, zeros + 1.0, zeros, zeros)
    rl_grad = jax.jit(jax.grad(lambda p: rl_loss(rl_setup, hp, RLParams(p, None), batch)[0]))
    rl_s = best_seconds(lambda: rl_grad(params), repeats)

    pre_prompts, pre_completions = task.corpus(jax.random.key(3), config.pretrain_batch)
    pre_grad = jax.jit(jax.grad(functools.partial(next_token_loss, lm, task.eos_id)))
    pre_s = best_seconds(lambda: pre_grad(params, pre_prompts, pre_completions), repeats)

    seq = task.prompt_len + task.completion_len
    n = non_embedding_params(params)
    attention = 2 * config.num_layers * seq * config.d_model  # forward, per token, at the mean length
    return {
        "non_embedding_params": n,
        "sequence_positions": seq,
        "sampled_positions_per_s": config.rl_batch * task.completion_len / sample_s,
        "sampled_valid_tokens_per_s": valid / sample_s,
        "sampled_model_flops": config.rl_batch * task.completion_len * (2 * n + attention) / sample_s,
        "rl_trained_positions_per_s": mb * seq / rl_s,
        "rl_trained_model_flops": mb * seq * 3 * (2 * n + attention) / rl_s,
        "pretrain_positions_per_s": config.pretrain_batch * seq / pre_s,
        "pretrain_model_flops": config.pretrain_batch * seq * 3 * (2 * n + attention) / pre_s,
        "seconds": {"sample": sample_s, "rl_grad_step": rl_s, "pretrain_grad_step": pre_s},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    flops = matmul_flops(args.repeats)
    peak = max(flops.values())
    model = measure(RLHFConfig(), args.repeats)
    record = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "matmul_float32_flops": flops,
        **model,
        "fraction_of_matmul": {
            k.removesuffix("_model_flops"): v / peak for k, v in model.items() if k.endswith("_model_flops")
        },
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
