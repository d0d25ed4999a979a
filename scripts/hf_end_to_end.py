"""End to end through a Hugging Face checkpoint on the CPU: build, pretrain and save a Qwen2-shaped
model, then fine-tune it with `ppo-jax rlhf --model hf:PATH --task jsonl:PATH`.

    python scripts/hf_end_to_end.py --work runs/hf-e2e [--seed 0] [--pretrain-steps 2000] [--lora-rank 0]

1. `sums.jsonl`: every `a+b=` with two-digit operands (zero-padded) and its sum as the answer.
2. A character-level tokenizer trained here with `tokenizers` on those texts (`<|endoftext|>`:
   EOS and pad).
3. A Qwen2-shaped decoder (2 layers, width 64, 4 query / 2 key-value heads, q/k/v biases, tied
   embeddings) pretrained by next-token prediction on an imperfect corpus of the training rows
   (the right sum with probability 0.3, otherwise one digit replaced, deleted or inserted), the
   held-out rows never seen; saved as a Hugging Face checkpoint folder (`model/`).
4. `ppo-jax rlhf --model hf:model --task jsonl:sums.jsonl --pretrain-steps 0 ...` (GRPO), which
   prints held-out exact-match accuracy before and after RL and writes its run folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ppo_jax.core.optim import make_optimizer, warmup_cosine
from ppo_jax.rlhf import hf_checkpoint
from ppo_jax.rlhf.decoder import DecoderConfig, decoder_lm
from ppo_jax.rlhf.jsonl_task import is_held_out
from ppo_jax.rlhf.pretrain import next_token_loss

EOS = "<|endoftext|>"
COMPLETION_LEN = 5


def write_data(work: Path) -> list[tuple[str, str]]:
    rows = [(f"{a:02d}+{b:02d}=", str(a + b)) for a in range(100) for b in range(100)]
    with open(work / "sums.jsonl", "w") as f:
        for prompt, answer in rows:
            f.write(json.dumps({"prompt": prompt, "answer": answer}) + "\n")
    return rows


def train_tokenizer(rows: list[tuple[str, str]], folder: Path) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator([p + a for p, a in rows], trainers.WordLevelTrainer(special_tokens=[EOS]))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS, "pad_token": EOS}))
    return tok


def corrupt(answer: str, rng: np.random.Generator) -> str:
    """One edit of the answer: a digit replaced, deleted (if two or more) or inserted."""
    i = int(rng.integers(len(answer)))
    edit = int(rng.integers(3 if len(answer) > 1 else 2))
    digit = str(rng.integers(10))
    if edit == 0:
        return answer[:i] + str((int(answer[i]) + 1 + int(rng.integers(9))) % 10) + answer[i + 1 :]
    if edit == 1:
        return answer[:i] + digit + answer[i:]
    return answer[:i] + answer[i + 1 :]


def corpus(rows, tok: Tokenizer, rng: np.random.Generator, right: float):
    """Token arrays (prompts [N, P], completions [N, L]) of the training rows, one sample each epoch."""
    eos = tok.token_to_id(EOS)
    prompts, completions = [], []
    for prompt, answer in rows:
        text = answer if rng.random() < right else corrupt(answer, rng)
        ids = tok.encode(text).ids[: COMPLETION_LEN - 1] + [eos]
        prompts.append(tok.encode(prompt).ids)
        completions.append(ids + [eos] * (COMPLETION_LEN - len(ids)))
    return np.array(prompts, np.int32), np.array(completions, np.int32)


def pretrain(config: DecoderConfig, data, steps: int, batch: int, seed: int):
    lm = decoder_lm(config)
    eos = config.pad_id
    tx = make_optimizer(warmup_cosine(3e-3, steps), 1.0)
    prompts, completions = (jnp.asarray(x) for x in data)

    @jax.jit
    def run(key):
        key_init, key = jax.random.split(key)
        params = lm.init(key_init)

        def step(carry, key):
            params, opt = carry
            index = jax.random.randint(key, (batch,), 0, prompts.shape[0])
            loss_fn = functools.partial(next_token_loss, lm, eos)
            loss, grads = jax.value_and_grad(loss_fn)(params, prompts[index], completions[index])
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))
        return params, losses

    return run(jax.random.key(seed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder for the data, the checkpoint and the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--corpus-accuracy", type=float, default=0.3)
    parser.add_argument("--corpus-copies", type=int, default=16, help="corrupted samples drawn per training row")
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--rl-updates", type=int, default=60)
    parser.add_argument("rlhf_flags", nargs="*", help="further ppo-jax rlhf flags (after --)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = write_data(work)
    model = work / "model"
    tok = train_tokenizer(rows, model)
    eos = tok.token_to_id(EOS)
    prompt_len = len(tok.encode(rows[0][0]).ids)
    config = DecoderConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        max_len=prompt_len + COMPLETION_LEN,
        rope_theta=10000.0,
        qkv_bias=True,
        tie_embeddings=True,
        pad_id=eos,
    )
    train_rows = [r for r in rows if not is_held_out(r[0], 0.2)]
    rng = np.random.default_rng(args.seed)
    data = corpus(train_rows * args.corpus_copies, tok, rng, args.corpus_accuracy)
    params, losses = pretrain(config, data, args.pretrain_steps, 256, args.seed)
    print(f"pretrained {args.pretrain_steps} steps: loss {float(losses[0]):.3f} -> {float(losses[-1]):.3f}", flush=True)
    extra = {"eos_token_id": eos, "pad_token_id": eos}
    hf_checkpoint.save_checkpoint(model, config._replace(pad_id=None), params, "qwen2", extra)
    command = [
        sys.executable,
        "-m",
        "ppo_jax.commands.main",
        "rlhf",
        "--model",
        f"hf:{model}",
        "--task",
        f"jsonl:{work / 'sums.jsonl'}",
        "--completion-len",
        str(COMPLETION_LEN),
        "--pretrain-steps",
        "0",
        "--rl-updates",
        str(args.rl_updates),
        "--lora-rank",
        str(args.lora_rank),
        "--seed",
        str(args.seed),
        "--out",
        str(work / "run"),
        "--overwrite",
        *args.rlhf_flags,
    ]
    print(" ".join(command), flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
