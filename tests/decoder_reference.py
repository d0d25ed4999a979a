"""A NumPy reference of the Llama / Qwen2 / Mistral forward pass, written from the architecture
descriptions (not from ppo_jax), and tiny random Hugging Face checkpoints for the tests.

It reads config.json fields and checkpoint tensor names directly, computes in float64, and uses the
plainest form of every step: loops over heads, `np.repeat` for grouped-query attention, an explicit
mask matrix, the llama3 frequency rule one frequency at a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def rope_frequencies(config: dict, head_dim: int) -> np.ndarray:
    """inv_freq[i] = theta^(-2i/D), rescaled by the config's rope_scaling rule."""
    theta = config.get("rope_theta", 10000.0)
    freqs = [1.0 / theta ** (2 * i / head_dim) for i in range(head_dim // 2)]
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        freqs = [f / scaling["factor"] for f in freqs]
    elif kind == "llama3":
        out = []
        for f in freqs:
            wavelength = 2 * math.pi / f
            old = scaling["original_max_position_embeddings"]
            if wavelength < old / scaling["high_freq_factor"]:
                out.append(f)  # high frequencies: unchanged
            elif wavelength > old / scaling["low_freq_factor"]:
                out.append(f / scaling["factor"])  # low frequencies: interpolated
            else:
                t = (old / wavelength - scaling["low_freq_factor"]) / (
                    scaling["high_freq_factor"] - scaling["low_freq_factor"]
                )
                out.append((1 - t) * f / scaling["factor"] + t * f)
        freqs = out
    return np.array(freqs)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return weight * x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)


def apply_rope(x: np.ndarray, positions: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """x [T, D] at positions [T]: rotate (x_i, x_{i+D/2}) by positions * freqs[i]."""
    half = x.shape[-1] // 2
    angle = positions[:, None] * freqs[None, :]
    a, b = x[:, :half], x[:, half:]
    return np.concatenate([a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)], axis=-1)


def forward(config: dict, weights: dict[str, np.ndarray], tokens: np.ndarray, keep: np.ndarray | None = None):
    """Logits [T, V] of one sequence tokens [T]; `keep` [T] bool marks real tokens (False: left
    padding, masked as a key, positions counted from the first real token)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    keep = np.ones(len(tokens), bool) if keep is None else keep
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    eps = config["rms_norm_eps"]
    freqs = rope_frequencies(config, head_dim)
    window = config.get("sliding_window")
    if config["model_type"] == "qwen2" and not config.get("use_sliding_window", False):
        window = None
    positions = np.cumsum(keep) - 1.0
    n = len(tokens)
    mask = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            mask[i, j] = keep[j] and j <= i and (window is None or i - j < window)
    x = w["model.embed_tokens.weight"][tokens]

    def linear(prefix, h):
        out = h @ w[prefix + ".weight"].T
        return out + w[prefix + ".bias"] if prefix + ".bias" in w else out

    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(p + "self_attn.q_proj", h).reshape(n, heads, head_dim)
        k = linear(p + "self_attn.k_proj", h).reshape(n, kv_heads, head_dim)
        v = linear(p + "self_attn.v_proj", h).reshape(n, kv_heads, head_dim)
        k = np.repeat(k, heads // kv_heads, axis=1)
        v = np.repeat(v, heads // kv_heads, axis=1)
        out = np.zeros((n, heads, head_dim))
        for head in range(heads):
            qh = apply_rope(q[:, head], positions, freqs)
            kh = apply_rope(k[:, head], positions, freqs)
            scores = np.where(mask, qh @ kh.T / math.sqrt(head_dim), -np.inf)
            scores = np.where(mask.any(axis=1, keepdims=True), scores, 0.0)  # fully masked rows (padding)
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[:, head] = (probs / probs.sum(axis=1, keepdims=True)) @ v[:, head]
        x = x + linear(p + "self_attn.o_proj", out.reshape(n, heads * head_dim))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(p + "mlp.gate_proj", h)
        x = x + linear(p + "mlp.down_proj", gate / (1 + np.exp(-gate)) * linear(p + "mlp.up_proj", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


# --- tiny random checkpoints ----------------------------------------------------------------

BASE = {
    "vocab_size": 37,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64,
    "hidden_act": "silu",
}
CONFIGS = {
    "llama-llama3-untied": BASE
    | {
        "model_type": "llama",
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        "tie_word_embeddings": False,
    },
    "llama-linear-tied-bias": BASE
    | {
        "model_type": "llama",
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "attention_bias": True,
        "mlp_bias": True,
        "tie_word_embeddings": True,
        "head_dim": 12,
    },
    "qwen2-tied": BASE
    | {"model_type": "qwen2", "rope_theta": 1000000.0, "tie_word_embeddings": True, "rms_norm_eps": 1e-6},
    "qwen2-untied-mha": BASE
    | {"model_type": "qwen2", "rope_theta": 10000.0, "tie_word_embeddings": False, "num_key_value_heads": 4},
    "mistral-window": BASE
    | {"model_type": "mistral", "rope_theta": 10000.0, "sliding_window": 3, "num_key_value_heads": 1},
}


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a checkpoint with this config.json, by its Hugging Face name."""
    d, m, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    hd = config.get("head_dim") or d // heads
    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)}
        for name, (out, inp) in {
            "q": (heads * hd, d),
            "k": (kv * hd, d),
            "v": (kv * hd, d),
            "o": (d, heads * hd),
        }.items():
            shapes[p + f"self_attn.{name}_proj.weight"] = (out, inp)
            if qkv_bias and name != "o":
                shapes[p + f"self_attn.{name}_proj.bias"] = (out,)
        if config.get("attention_bias", False):
            shapes[p + "self_attn.o_proj.bias"] = (d,)
        for name, (out, inp) in {"gate": (m, d), "up": (m, d), "down": (d, m)}.items():
            shapes[p + f"mlp.{name}_proj.weight"] = (out, inp)
            if config.get("mlp_bias", False):
                shapes[p + f"mlp.{name}_proj.bias"] = (out,)
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (v, d)
    return shapes


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Random float32 tensors: norms near 1, the rest N(0, 0.3²) (large enough that every part of
    the model moves the logits)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(config).items():
        scale = 0.2 if name.endswith("norm.weight") else 0.3
        base = 1.0 if name.endswith("norm.weight") else 0.0
        out[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def write_checkpoint(folder: Path, config: dict, weights: dict[str, np.ndarray], shards: int = 1) -> Path:
    """config.json and the weights (one file, or `shards` files with an index) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    names = sorted(weights)
    index = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_file({k: weights[k] for k in part}, str(folder / file), metadata={"format": "pt"})
        index |= dict.fromkeys(part, file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    return folder


def write_tokenizer(folder: Path, texts: list[str], chat_template: str | None = None) -> int:
    """A character-level `tokenizer.json` over `texts` with `<|endoftext|>` (id 0) as EOS and
    pad, the ids in config.json-style files; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = sorted({c for text in texts for c in text})
    vocab = {"<|endoftext|>": 0} | {c: i + 1 for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<|endoftext|>"])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)
