"""Hugging Face checkpoint folders of the Llama / Qwen2 / Mistral family, read into and written from
the parameters of `decoder.Decoder`. Nothing is downloaded: a folder is local.

A folder holds `config.json` (shape and flags), the weights in `model.safetensors` or in shards
listed by `model.safetensors.index.json`, and optionally `generation_config.json` and the
tokenizer files (read by `rlhf.tokenizer`). Weight names map one to one onto the Flax tree:

    model.embed_tokens.weight [V, d]                   -> embed_tokens/embedding
    model.layers.i.self_attn.{q,k,v,o}_proj.weight     -> layers_i/self_attn/{q,k,v,o}_proj/kernel (transposed)
    model.layers.i.mlp.{gate,up,down}_proj.weight      -> layers_i/mlp/{gate,up,down}_proj/kernel (transposed)
    model.layers.i.{input,post_attention}_layernorm.weight, model.norm.weight -> .../weight
    lm_head.weight [V, d] (untied only)                -> lm_head/kernel (transposed)

and biases where the flags have them. The scalar `value_head` is not in a checkpoint: it starts at
zero on reading and is left out on writing. Every architecture is one entry of `ARCHITECTURES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.rlhf.decoder import DTYPES, DecoderConfig, check_config
from ppo_jax.rlhf.tokenizer import read_json_object

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class Architecture(NamedTuple):
    """How one `model_type` spells its flags in config.json, both ways."""

    hf_class: str
    read_flags: Callable[[dict], dict]  # config.json -> DecoderConfig fields
    write_flags: Callable[[DecoderConfig], dict]  # DecoderConfig -> config.json fields


def _llama_read(raw: dict) -> dict:
    bias = bool(raw.get("attention_bias", False))
    return {"qkv_bias": bias, "o_bias": bias, "mlp_bias": bool(raw.get("mlp_bias", False))}


def _llama_write(config: DecoderConfig) -> dict:
    if config.qkv_bias != config.o_bias or config.sliding_window is not None:
        raise ConfigError("model", "llama has attention biases on all of q, k, v, o or none, and no sliding window")
    return {"attention_bias": config.qkv_bias, "mlp_bias": config.mlp_bias}


def _qwen2_read(raw: dict) -> dict:
    window = raw.get("sliding_window") if raw.get("use_sliding_window", False) else None
    return {"qkv_bias": True, "sliding_window": window}


def _qwen2_write(config: DecoderConfig) -> dict:
    if not config.qkv_bias or config.o_bias or config.mlp_bias:
        raise ConfigError("model", "qwen2 has q, k, v biases and no other")
    window = config.sliding_window
    return {"use_sliding_window": window is not None, "sliding_window": window, "max_window_layers": 0}


def _mistral_read(raw: dict) -> dict:
    return {"sliding_window": raw.get("sliding_window")}


def _mistral_write(config: DecoderConfig) -> dict:
    if config.qkv_bias or config.o_bias or config.mlp_bias:
        raise ConfigError("model", "mistral has no biases")
    return {"sliding_window": config.sliding_window}


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("LlamaForCausalLM", _llama_read, _llama_write),
    "qwen2": Architecture("Qwen2ForCausalLM", _qwen2_read, _qwen2_write),
    "mistral": Architecture("MistralForCausalLM", _mistral_read, _mistral_write),
}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RunFileError(path, "missing; a Hugging Face checkpoint folder needs it")
    return read_json_object(path)


def _rope(raw: dict) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either spelling: top-level keys or `rope_parameters`."""
    params = raw.get("rope_parameters") or {}
    theta = float(raw.get("rope_theta", params.get("rope_theta", 10000.0)))
    scaling = raw.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    return theta, scaling


def read_config(folder, max_len: int, dtype: str = "float32", pad_id: int | None = None) -> DecoderConfig:
    """The `DecoderConfig` of a checkpoint folder; `max_len` sizes the KV cache. Raises
    `RunFileError` for a missing or unreadable config.json, `ConfigError` for what is unsupported."""
    path = Path(folder) / CONFIG_FILE
    raw = _read_json(path)
    model_type = raw.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            "model", f"{path}: model_type {model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError("model", f"{path}: hidden_act {raw['hidden_act']!r} is not supported; supported: silu")
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        heads = int(raw["num_attention_heads"])
        theta, scaling = _rope(raw)
        config = DecoderConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or raw["hidden_size"] // heads),
            max_len=int(max_len),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=None if scaling is None else tuple(sorted(scaling.items())),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            dtype=dtype,
            pad_id=pad_id,
            **ARCHITECTURES[model_type].read_flags(raw),
        )
    except KeyError as error:
        raise RunFileError(path, f"has no field {error.args[0]!r}") from None
    check_config(config)
    return config


def weight_map(config: DecoderConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Checkpoint name -> (path in the Flax params, transposed?) for every tensor of `config`."""
    names: dict[str, tuple[tuple[str, ...], bool]] = {
        "model.embed_tokens.weight": (("embed_tokens", "embedding"), False)
    }
    biases = {"q_proj": config.qkv_bias, "k_proj": config.qkv_bias, "v_proj": config.qkv_bias, "o_proj": config.o_bias}
    biases |= {name: config.mlp_bias for name in ("gate_proj", "up_proj", "down_proj")}
    for i in range(config.num_layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            names[f"model.layers.{i}.{norm}.weight"] = ((f"layers_{i}", norm, "weight"), False)
        for proj, bias in biases.items():
            block = "self_attn" if proj.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            names[f"model.layers.{i}.{block}.{proj}.weight"] = ((f"layers_{i}", block, proj, "kernel"), True)
            if bias:
                names[f"model.layers.{i}.{block}.{proj}.bias"] = ((f"layers_{i}", block, proj, "bias"), False)
    names["model.norm.weight"] = (("norm", "weight"), False)
    if not config.tie_embeddings:
        names["lm_head.weight"] = (("lm_head", "kernel"), True)
    return names


def weight_files(folder) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards of the index)."""
    folder = Path(folder)
    if (folder / INDEX_FILE).is_file():
        index = _read_json(folder / INDEX_FILE).get("weight_map")
        if not isinstance(index, dict):
            raise RunFileError(folder / INDEX_FILE, "has no weight_map")
        return {name: folder / file for name, file in index.items()}
    if not (folder / WEIGHTS_FILE).is_file():
        raise RunFileError(folder / WEIGHTS_FILE, f"missing (and no {INDEX_FILE}); the weights of the checkpoint")
    return dict.fromkeys(_tensor_names(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return list(f.keys())
    except Exception as error:  # safetensors raises its own error types for garbage
        raise RunFileError(path, f"not a readable safetensors file ({error})") from None


def _read_tensors(files: dict[str, Path], wanted: list[str]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    missing = [name for name in wanted if name not in files]
    if missing:
        raise RunFileError(next(iter(files.values()), "weights"), f"has no tensor {missing[0]!r}")
    tensors = {}
    for path in sorted({files[name] for name in wanted}):
        try:
            with safe_open(str(path), framework="np") as f:
                tensors |= {name: f.get_tensor(name) for name in wanted if files[name] == path}
        except Exception as error:
            raise RunFileError(path, f"not a readable safetensors file ({error})") from None
    return tensors


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_params(folder, config: DecoderConfig) -> dict[str, Any]:
    """The Flax params of `Decoder(config)` from the folder's safetensors, in `config.dtype` (the
    scalar head zero). Raises `RunFileError` for a missing tensor or one of the wrong shape."""
    names = weight_map(config)
    files = weight_files(folder)
    tensors = _read_tensors(files, list(names))
    expected = expected_shapes(config)
    params: dict[str, Any] = {}
    for name, (path, transpose) in names.items():
        array = tensors[name].T if transpose else tensors[name]
        if array.shape != expected[path]:
            raise RunFileError(
                files[name], f"tensor {name!r} has shape {array.shape}, config.json implies {expected[path]}"
            )
        _set(params, path, jnp.asarray(np.asarray(array).astype(config.param_dtype)))
    _set(params, ("value_head", "kernel"), jnp.zeros((config.hidden_size, 1), jnp.float32))
    _set(params, ("value_head", "bias"), jnp.zeros((1,), jnp.float32))
    return {"params": params}


def expected_shapes(config: DecoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape, for every checkpoint tensor of `config`."""
    c = config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    outputs = {"q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": c.hidden_size, "gate_proj": c.intermediate_size}
    outputs |= {"up_proj": c.intermediate_size, "down_proj": c.hidden_size}
    inputs = {"o_proj": q, "down_proj": c.intermediate_size}
    shapes = {}
    for path, _ in weight_map(config).values():
        if path[0] == "embed_tokens":
            shapes[path] = (c.vocab_size, c.hidden_size)
        elif path[0] == "lm_head":
            shapes[path] = (c.hidden_size, c.vocab_size)
        elif path[-1] == "weight":
            shapes[path] = (c.hidden_size,)
        elif path[-1] == "kernel":
            shapes[path] = (inputs.get(path[-2], c.hidden_size), outputs[path[-2]])
        else:
            shapes[path] = (outputs[path[-2]],)
    return shapes


def config_json(config: DecoderConfig, model_type: str, extra: dict | None = None) -> dict:
    """The config.json fields of `config` as `model_type` (plus `extra`, e.g. token ids)."""
    if model_type not in ARCHITECTURES:
        raise ConfigError("model", f"model_type {model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[model_type]
    return {
        "architectures": [arch.hf_class],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_len,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None if config.rope_scaling is None else dict(config.rope_scaling),
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": config.dtype,
        **arch.write_flags(config),
        **(extra or {}),
    }


def save_checkpoint(folder, config: DecoderConfig, params, model_type: str, extra: dict | None = None) -> Path:
    """Write config.json and model.safetensors (the weights in `config.dtype`, checkpoint layout)
    into `folder` (created). Returns the folder."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config_json(config, model_type, extra), indent=2) + "\n")
    tree = params["params"]
    tensors = {}
    for name, (path, transpose) in weight_map(config).items():
        leaf = tree
        for key in path:
            leaf = leaf[key]
        array = np.asarray(leaf).astype(config.param_dtype)
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder
