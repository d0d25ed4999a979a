"""Logits of `ppo_jax.rlhf.decoder` against Hugging Face `transformers` on tiny random checkpoints.

    python scripts/check_hf_logits.py --python VENV/bin/python [--out docs/benchmarks/hf_logits.md]

`transformers` (with CPU torch) lives in a virtual environment of its own, named by `--python`;
this script runs it as a subprocess, so ppo_jax's environment never imports torch. For each
architecture case it writes a random checkpoint (config.json + model.safetensors, float32),
computes the logits of the same token batch (one row left-padded, with the matching attention
mask for transformers) in both, and prints the largest absolute difference over the real
positions. Exit code 1 when a case exceeds `--tolerance` (default 1e-4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from ppo_jax.rlhf import hf_checkpoint
from ppo_jax.rlhf.decoder import decoder_lm

BASE = {
    "vocab_size": 101,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 128,
    "hidden_act": "silu",
    "torch_dtype": "float32",
    "pad_token_id": 0,
}
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
CASES = {
    "llama, llama3 rope scaling, GQA 8/2, untied": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3,
        "tie_word_embeddings": False,
    },
    "llama, linear rope scaling, biases, head_dim 12, tied": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "attention_bias": True,
        "mlp_bias": True,
        "head_dim": 12,
        "tie_word_embeddings": True,
    },
    "qwen2, q/k/v biases, GQA 8/2, tied": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
    },
    "qwen2, q/k/v biases, MHA, untied": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "rope_theta": 10000.0,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
    },
    "mistral, sliding window 4, GQA 8/1, untied": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "rope_theta": 10000.0,
        "sliding_window": 4,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
    },
}

HF_PROGRAM = """
import sys, numpy as np, torch, transformers
folder, tokens_file, mask_file, out_file = sys.argv[1:5]
model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
model.eval()
tokens = torch.from_numpy(np.load(tokens_file))
mask = torch.from_numpy(np.load(mask_file))
positions = (mask.cumsum(-1) - 1).clamp(min=0)
with torch.no_grad():
    logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions).logits
np.save(out_file, logits.float().numpy())
print(transformers.__version__, torch.__version__)
"""


def random_checkpoint(folder: Path, config: dict, seed: int) -> None:
    """Random float32 weights (norm weights near 1) for every tensor config.json implies."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    shapes = hf_checkpoint.expected_shapes(hf_checkpoint.read_config(folder, 8))
    names = hf_checkpoint.weight_map(hf_checkpoint.read_config(folder, 8))
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (path, transpose) in names.items():
        shape = shapes[path][::-1] if transpose else shapes[path]
        base = 1.0 if name.endswith("norm.weight") else 0.0
        tensors[name] = (base + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def compare(python: str, name: str, config: dict, work: Path, seed: int) -> tuple[float, float, str]:
    """(max |ours − transformers| over real positions, max |logit|, versions) for one case."""
    folder = work / f"case{seed}"
    random_checkpoint(folder, BASE | config, seed)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, BASE["vocab_size"], (3, 20)).astype(np.int64)
    tokens[1, :5] = BASE["pad_token_id"]  # left padding
    mask = (np.cumsum(tokens != BASE["pad_token_id"], axis=1) > 0).astype(np.int64)
    np.save(work / "tokens.npy", tokens)
    np.save(work / "mask.npy", mask)
    run = subprocess.run(
        [python, "-c", HF_PROGRAM, str(folder), str(work / "tokens.npy"), str(work / "mask.npy"), str(work / "hf.npy")],
        capture_output=True,
        text=True,
    )
    if run.returncode:
        raise SystemExit(f"transformers failed on {name}:\n{run.stderr[-2000:]}")
    theirs = np.load(work / "hf.npy")
    decoder = hf_checkpoint.read_config(folder, tokens.shape[1], pad_id=BASE["pad_token_id"])
    ours = np.asarray(decoder_lm(decoder).logits_fn(hf_checkpoint.load_params(folder, decoder), jnp.asarray(tokens)))
    real = mask.astype(bool)
    return float(np.abs(ours - theirs)[real].max()), float(np.abs(theirs[real]).max()), run.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="interpreter of the environment with transformers and torch")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    lines = ["| case | max abs difference | max abs logit |", "|---|---|---|"]
    worst, versions = 0.0, ""
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (name, config) in enumerate(CASES.items()):
            difference, scale, versions = compare(args.python, name, config, Path(tmp), seed)
            worst = max(worst, difference)
            lines.append(f"| {name} | {difference:.2e} | {scale:.2f} |")
    text = "\n".join(lines) + f"\n\ntransformers, torch: {versions}; tolerance {args.tolerance:g}\n"
    print(text, end="")
    if args.out:
        heading = "# Decoder logits against Hugging Face transformers\n\nTiny random float32 checkpoints, "
        heading += "3 rows of 20 tokens (one left-padded by 5), real positions only. Made by\n\n"
        heading += "    python scripts/check_hf_logits.py --python VENV/bin/python --out " + args.out + "\n\n"
        Path(args.out).write_text(heading + text)
    return 1 if worst > args.tolerance else 0


if __name__ == "__main__":
    sys.exit(main())
