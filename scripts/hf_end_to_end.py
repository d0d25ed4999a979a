"""End to end through a Hugging Face checkpoint on the CPU: build, pretrain and save a Qwen2-shaped
model, then fine-tune it with `ppo-jax rlhf --model hf:PATH --task jsonl:PATH`.

    python scripts/hf_end_to_end.py --work WORK [--seed 0] [--pretrain-steps 4000] [--rl-updates 150] \\
        [--run-name run-full-s0] [-- further ppo-jax rlhf flags]
    python scripts/hf_end_to_end.py --work WORK --collect docs/benchmarks/hf_end_to_end.json

1. `sums.jsonl`: every `a+b=` with two-digit operands (zero-padded) and its sum as the answer.
2. A character-level tokenizer trained here with `tokenizers` on those texts (`<|endoftext|>`:
   EOS and pad).
3. A Qwen2-shaped decoder (2 layers, width 64, 4 query / 2 key-value heads, q/k/v biases, tied
   embeddings) pretrained by next-token prediction on an imperfect corpus of the training rows,
   the held-out rows never seen: `pretrain_steps × pretrain_batch` examples, each a training row
   drawn at random whose answer is right with probability 0.3 and otherwise one fresh random edit
   (a digit replaced, deleted or inserted), so no example repeats (as in the shipped arithmetic
   task, whose corpus is drawn afresh every step). Saved as a Hugging Face checkpoint folder
   (`model/`); `pretrained.json` holds the pretrained model's held-out accuracy, greedy (its most
   likely answer: what sharpening by RL can reach) and sampled at temperature 1.
4. `ppo-jax rlhf --model hf:model --task jsonl:sums.jsonl --pretrain-steps 0 ...` (GRPO), which
   prints held-out exact-match accuracy before and after RL and writes `WORK/<run-name>`.
   `--rl-updates 0` stops after saving the checkpoint.

`--collect` gathers every `WORK/run-<group>-s<seed>/rlhf.json` into one JSON record with the mean
over seeds and a 95 % bootstrap interval per group.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
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
from ppo_jax.runtime import stats

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


def corpus(rows, tok: Tokenizer, rng: np.random.Generator, right: float, num: int):
    """`num` pretraining examples (prompts [num, P], completions [num, L]): training rows drawn
    uniformly, each answer right with probability `right`, else one fresh random edit of it, so
    that, as in the shipped arithmetic task, no example is seen twice."""
    eos = tok.token_to_id(EOS)
    prompt_ids = np.array([tok.encode(p).ids for p, _ in rows], np.int32)
    digit_ids = {d: tok.token_to_id(d) for d in "0123456789"}  # character-level: one token per digit
    prompts, completions = [], []
    for i in rng.integers(len(rows), size=num):
        answer = rows[i][1]
        text = answer if rng.random() < right else corrupt(answer, rng)
        ids = [digit_ids[c] for c in text][: COMPLETION_LEN - 1] + [eos]
        prompts.append(prompt_ids[i])
        completions.append(ids + [eos] * (COMPLETION_LEN - len(ids)))
    return np.array(prompts, np.int32), np.array(completions, np.int32)


def pretrain(config: DecoderConfig, data, batch: int, lr: float, seed: int):
    """Next-token pretraining, one pass over `data` in batches of `batch` (steps = rows // batch)."""
    lm = decoder_lm(config)
    eos = config.pad_id
    steps = data[0].shape[0] // batch
    tx = make_optimizer(warmup_cosine(lr, steps), 1.0)
    prompts, completions = (jnp.asarray(x[: steps * batch].reshape(steps, batch, -1)) for x in data)

    @jax.jit
    def run(key, prompts, completions):  # the corpus as arguments, not constants XLA would try to fold
        params = lm.init(key)

        def step(carry, batch_tokens):
            params, opt = carry
            loss_fn = functools.partial(next_token_loss, lm, eos)
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch_tokens)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), (prompts, completions))
        return params, losses

    return run(jax.random.key(seed), prompts, completions)


def held_out_accuracy(config: DecoderConfig, params, rows, tok: Tokenizer, seed: int) -> dict[str, float]:
    """The pretrained model on every held-out row: exact-match accuracy of its greedy answer (the
    mode, which RL's sharpening can reach at best) and of one sample at temperature 1."""
    lm = decoder_lm(config)
    eos = tok.token_to_id(EOS)
    prompts = jnp.asarray(np.array([tok.encode(p).ids for p, _ in rows], np.int32))

    @functools.partial(jax.jit, static_argnames="greedy")
    def decode(params, prompts, key, greedy):  # arguments, not constants XLA would try to fold
        tokens = prompts
        for key_t in jax.random.split(key, COMPLETION_LEN):
            logits = lm.logits_fn(params, tokens)[:, -1]
            nxt = jnp.argmax(logits, -1) if greedy else jax.random.categorical(key_t, logits)
            tokens = jnp.concatenate([tokens, nxt[:, None].astype(tokens.dtype)], axis=1)
        return tokens[:, prompts.shape[1] :]

    out = {}
    for name, greedy in (("greedy", True), ("sampled", False)):
        completions = np.asarray(decode(params, prompts, jax.random.key(seed), greedy))
        texts = [
            tok.decode([t for t in row[: list(row).index(eos) if eos in row else len(row)]]) for row in completions
        ]
        out[name] = float(np.mean([text == answer for text, (_, answer) in zip(texts, rows, strict=True)]))
    return out


def build_and_pretrain(args, work: Path) -> Path:
    """Data, tokenizer, pretrained decoder saved under `work` (see the module docstring); writes
    `pretrained.json` (steps, seconds, the pretrained model's held-out accuracy); returns the model folder."""
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
    start, start_cpu = time.perf_counter(), time.process_time()
    data = corpus(train_rows, tok, rng, args.corpus_accuracy, args.pretrain_steps * args.pretrain_batch)
    params, losses = jax.block_until_ready(pretrain(config, data, args.pretrain_batch, args.pretrain_lr, args.seed))
    seconds = {"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu}
    print(f"pretrained {args.pretrain_steps} steps: loss {float(losses[0]):.3f} -> {float(losses[-1]):.3f}", flush=True)
    extra = {"eos_token_id": eos, "pad_token_id": eos}
    hf_checkpoint.save_checkpoint(model, config._replace(pad_id=None), params, "qwen2", extra)
    held_rows = [r for r in rows if is_held_out(r[0], 0.2)]
    accuracy = held_out_accuracy(config, params, held_rows, tok, args.seed)
    print(f"pretrained model on {len(held_rows)} held-out rows: " + json.dumps(accuracy), flush=True)
    record = {"steps": args.pretrain_steps, "batch": args.pretrain_batch, "lr": args.pretrain_lr, "seconds": seconds}
    record["loss_first_last"] = [float(losses[0]), float(losses[-1])]
    (work / "pretrained.json").write_text(json.dumps({**record, "held_out_accuracy": accuracy}) + "\n")
    return model


def rlhf_command(args, work: Path, model: Path) -> list[str]:
    """`ppo-jax rlhf` on the saved checkpoint and the JSONL file (GRPO defaults otherwise)."""
    flags = [
        "--model",
        f"hf:{model}",
        "--task",
        f"jsonl:{work / 'sums.jsonl'}",
        "--completion-len",
        str(COMPLETION_LEN),
    ]
    flags += ["--pretrain-steps", "0", "--rl-updates", str(args.rl_updates), "--lora-rank", str(args.lora_rank)]
    flags += ["--seed", str(args.seed), "--out", str(work / args.run_name), "--overwrite", *args.rlhf_flags]
    return [sys.executable, "-m", "ppo_jax.commands.main", "rlhf", *flags]


def collect(work: Path, out: Path) -> None:
    """One JSON record of the pretrained model, every run folder `work/run-<group>-s<seed>`
    (rlhf.json, config.json) and per group the mean over seeds with a 95 % bootstrap interval."""
    record = {"pretrained": json.loads((work / "pretrained.json").read_text()), "runs": {}, "groups": {}}
    keep = ("accuracy_before", "accuracy_after", "kl_to_reference", "length_after", "wall_seconds", "cpu_seconds")
    groups: dict[str, list[dict]] = {}
    for path in sorted(work.glob("run-*-s*/rlhf.json")):
        summary = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        run = {"config": config, **{k: summary[k] for k in keep}}
        record["runs"][path.parent.name] = run
        groups.setdefault(path.parent.name.rsplit("-s", 1)[0], []).append(run)
    for name, runs in groups.items():
        group = {"seeds": [r["config"]["seed"] for r in runs]}
        for metric in ("accuracy_before", "accuracy_after", "kl_to_reference"):
            values = np.array([r[metric] for r in runs])
            ci = stats.bootstrap_ci(values, statistic=np.mean)
            group[metric] = {"mean": float(values.mean()), "ci95": [ci.low, ci.high], "per_seed": values.tolist()}
        group["rl_cpu_seconds"] = [r["cpu_seconds"]["rl"] for r in runs]
        group["rl_wall_seconds"] = [r["wall_seconds"]["rl"] for r in runs]
        record["groups"][name] = group
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["groups"], indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder for the data, the checkpoint and the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=4000)
    parser.add_argument("--corpus-accuracy", type=float, default=0.3)
    parser.add_argument("--pretrain-batch", type=int, default=256)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--rl-updates", type=int, default=150, help="RL updates (0: pretrain and save only)")
    parser.add_argument("--run-name", default="run", help="run folder under --work")
    parser.add_argument("--collect", default=None, metavar="JSON", help="only gather work/run*/rlhf.json into JSON")
    parser.add_argument("rlhf_flags", nargs="*", help="further ppo-jax rlhf flags (after --)")
    args = parser.parse_args()
    work = Path(args.work)
    if args.collect:
        collect(work, Path(args.collect))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    model = build_and_pretrain(args, work)
    if args.rl_updates == 0:
        return 0
    command = rlhf_command(args, work, model)
    print(" ".join(command), flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
