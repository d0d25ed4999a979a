"""Memory of one GRPO update of a Qwen2-0.5B-shaped decoder with random weights: the estimate
(`ppo_jax.rlhf.memory`), XLA's own account of the compiled program (`memory_analysis()`), and the
process's peak resident memory while the update runs, for one setting per run (run each in a fresh process):

    python scripts/lm_memory.py --mode full --dtype bfloat16 --out docs/benchmarks/lm_memory.json
    python scripts/lm_memory.py --mode lora --out docs/benchmarks/lm_memory.json
    python scripts/lm_memory.py --mode lora-remat --out docs/benchmarks/lm_memory.json

The weights are drawn at random (nothing is downloaded); the task is a synthetic one (random
prompt tokens, reward = the fraction of completion tokens equal to token 1) so that every shape is
the real model's. Each run adds or replaces its row in the JSON file.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.rlhf import lora, memory
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.decoder import DecoderConfig, decoder_lm
from ppo_jax.rlhf.finetune import _finetune
from ppo_jax.rlhf.rollout import Frozen, RLParams
from ppo_jax.rlhf.setup import make_setup

MODES = {"full": (0, False), "lora": (16, False), "lora-remat": (16, True)}


class TokenTask(NamedTuple):
    """Random prompts; reward = fraction of completion tokens equal to token 1; EOS is token 0."""

    vocab_size: int
    prompt_len: int
    completion_len: int
    eos_id: int = 0

    def prompts(self, key, num, held_out=False):
        return jax.random.randint(key, (num, self.prompt_len), 2, self.vocab_size)

    def reward(self, prompts, completions):
        return jnp.mean((completions == 1).astype(jnp.float32), axis=1)


def peak_rss() -> int:
    """The process's peak resident memory so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(name: str) -> int:
    """A `VmRSS` / `VmHWM` line of /proc/self/status, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def reset_peak() -> None:
    """Start a new peak-RSS window: VmHWM := VmRSS (Linux `clear_refs` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def random_variables(decoder: DecoderConfig, seed: int):
    """Random weights leaf by leaf (norms 1, the rest N(0, 0.02²)), so that creating them needs
    little more than the weights themselves (one jitted `init` would hold its RNG bits too)."""
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        if getattr(path[-1], "key", "") == "weight":  # RMSNorm
            return jnp.ones(shape.shape, shape.dtype)
        return jnp.asarray(rng.standard_normal(shape.shape, np.float32) * 0.02, shape.dtype)

    return jax.tree_util.tree_map_with_path(leaf, memory.parameter_shapes(decoder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(MODES), required=True)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch", type=int, default=4, help="completions per update")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--num-minibatches", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=8)
    parser.add_argument("--completion-len", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rank, remat = MODES[args.mode]
    row: dict = {"mode": args.mode, "dtype": args.dtype, "lora_rank": rank, "remat": remat}
    row |= {k: getattr(args, k) for k in ("batch", "group_size", "num_minibatches", "prompt_len", "completion_len")}
    row["rss_after_imports"] = peak_rss()

    task = TokenTask(memory.QWEN2_05B.vocab_size, args.prompt_len, args.completion_len)
    decoder = memory.QWEN2_05B._replace(max_len=args.prompt_len + args.completion_len, dtype=args.dtype, remat=remat)
    decoder = lora.lora_config(decoder, rank, 32.0) if rank else decoder
    shape = memory.UpdateShape(
        args.batch, args.batch // args.num_minibatches, args.prompt_len, args.completion_len, lora_rank=rank
    )
    est = memory.estimate(decoder, shape)
    print(est.describe(), flush=True)
    row["estimate"] = est._asdict() | {"total": est.total}

    config = RLHFConfig(
        rl_updates=1,
        rl_batch=args.batch,
        group_size=args.group_size,
        num_minibatches=args.num_minibatches,
        num_epochs=1,
    )
    lm = decoder_lm(decoder)
    setup = make_setup(config)._replace(task=task, policy=lm)
    base = random_variables(decoder, 0)
    policy = lora.with_adapters(base, lora.init_adapters(base, jax.random.key(1), rank)) if rank else base
    frozen = Frozen(base, None, jnp.float32(0.0), jnp.float32(1.0))
    params = RLParams(policy, None)
    jax.block_until_ready(params)
    row["rss_after_init"] = peak_rss()

    start = time.perf_counter()
    args_ = (setup, None, config.rl_hyperparams(), params, frozen, jax.random.key(2))
    compiled = _finetune.lower(*args_).compile()
    row["compile_seconds"] = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    row["xla"] = {name: int(getattr(analysis, name)) for name in fields}
    row["rss_after_compile"] = peak_rss()
    print(f"XLA: {row['xla']}", flush=True)

    row["rss_before_update"] = _status("VmRSS")
    reset_peak()
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(*args_[2:]))
    row["update_seconds"] = time.perf_counter() - start
    row["update_peak_rss"] = _status("VmHWM")  # since the reset: the update with everything resident
    row["peak_rss"] = peak_rss()  # the whole process, weight creation and compile included
    row["reward"] = float(result.history["reward"][0])
    row["command"] = "python scripts/lm_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    row["jax"] = jax.__version__
    print(json.dumps(row), flush=True)
    if args.out is not None:
        rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
        rows = [r for r in rows if (r["mode"], r["dtype"]) != (args.mode, args.dtype)] + [row]
        args.out.write_text(json.dumps({"model": "Qwen2-0.5B shapes, random weights", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
