"""The Llama / Qwen2 / Mistral decoder and its checkpoint I/O against the NumPy reference of
`decoder_reference` on tiny random checkpoints written here."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decoder_reference import CONFIGS, forward, random_weights, write_checkpoint

from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.rlhf import hf_checkpoint
from ppo_jax.rlhf.decoder import Decoder, decoder_lm
from ppo_jax.rlhf.lm import recompute_sampler

MAX_LEN = 16


def _checkpoint(tmp_path, name, seed=0, shards=1):
    config = CONFIGS[name]
    weights = random_weights(config, seed)
    return write_checkpoint(tmp_path / name, config, weights, shards), config, weights


def _load(folder, dtype="float32", pad_id=None):
    config = hf_checkpoint.read_config(folder, MAX_LEN, dtype, pad_id)
    lm = decoder_lm(config)
    lm = lm._replace(logits_fn=jax.jit(lm.logits_fn))
    return config, lm, hf_checkpoint.load_params(folder, config)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_numpy_reference(tmp_path, name):
    folder, raw, weights = _checkpoint(tmp_path, name, shards=2 if name.startswith("qwen2") else 1)
    _, lm, params = _load(folder)
    tokens = np.random.default_rng(1).integers(0, raw["vocab_size"], (2, 11))
    logits = np.asarray(lm.logits_fn(params, jnp.asarray(tokens, jnp.int32)))
    expected = np.stack([forward(raw, weights, row) for row in tokens])
    assert np.abs(expected).max() > 1.0  # the random model is far from uniform
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_left_padding_is_invisible(tmp_path):
    folder, raw, weights = _checkpoint(tmp_path, "qwen2-tied")
    pad = 5
    _, lm, params = _load(folder, pad_id=pad)
    tokens = np.array([[pad, pad, pad, 3, 9, 4, 7], [1, 2, 3, 4, 5, 6, 8]])
    logits = np.asarray(lm.logits_fn(params, jnp.asarray(tokens, jnp.int32)))
    short = forward(raw, weights, tokens[0, 3:])
    np.testing.assert_allclose(logits[0, 3:], short, atol=1e-4, rtol=1e-4)
    keep = np.array([False] * 3 + [True] * 4)
    np.testing.assert_allclose(logits[0, 3:], forward(raw, weights, tokens[0], keep)[3:], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits[1], forward(raw, weights, tokens[1]), atol=1e-4, rtol=1e-4)


def test_cached_decoding_equals_full_forward(tmp_path):
    """Sliding window and left padding through prefill + decode steps."""
    folder, raw, _ = _checkpoint(tmp_path, "mistral-window")
    config, lm, params = _load(folder, pad_id=0)
    module = Decoder(config)
    tokens = jnp.asarray(np.random.default_rng(2).integers(1, raw["vocab_size"], (3, 12)), jnp.int32)
    tokens = tokens.at[0, :2].set(0)  # left padding in one row
    full = lm.logits_fn(params, tokens)
    (first, _), cache = jax.jit(lambda t: module.apply(params, t, method=Decoder.prefill))(tokens[:, :5])
    decode = jax.jit(lambda token, slot, cache: module.apply(params, token, slot, cache, method=Decoder.decode))
    stepped = [first[:, -1]]
    for slot in range(5, 12):
        (step, _), cache = decode(tokens[:, slot], slot, cache)
        stepped.append(step)
    np.testing.assert_allclose(np.stack(stepped, 1), full[:, 4:], atol=1e-4, rtol=1e-4)


def test_cached_sampler_equals_recomputing_sampler_inside_scan(tmp_path):
    folder, raw, _ = _checkpoint(tmp_path, "mistral-window")
    _, lm, params = _load(folder)
    prompts = jnp.asarray(np.random.default_rng(3).integers(0, raw["vocab_size"], (4, 5)), jnp.int32)
    recompute = recompute_sampler(lm.logits_fn)

    def body(carry, key):
        cached = lm.sample_fn(params, prompts, key, 8, 36)
        return carry, (cached, recompute(params, prompts, key, 8, 36))

    _, (cached, again) = jax.jit(lambda keys: jax.lax.scan(body, 0, keys))(jax.random.split(jax.random.key(0), 2))
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(again))
    assert len(np.unique(np.asarray(cached))) > 5  # the samples are not all EOS


def test_bfloat16_weights_close_to_float32(tmp_path):
    folder, raw, weights = _checkpoint(tmp_path, "llama-llama3-untied")
    config, lm, params = _load(folder, dtype="bfloat16")
    assert params["params"]["layers_0"]["self_attn"]["q_proj"]["kernel"].dtype == jnp.bfloat16
    tokens = np.arange(9)[None] % raw["vocab_size"]
    logits = lm.logits_fn(params, jnp.asarray(tokens, jnp.int32))
    assert logits.dtype == jnp.float32
    expected = forward(raw, weights, tokens[0])
    error = np.abs(np.asarray(logits[0]) - expected).max() / np.abs(expected).max()
    assert 1e-5 < error < 0.05  # rounded to bfloat16, but the same model


def test_save_then_load_gives_the_same_tensors(tmp_path):
    folder, raw, weights = _checkpoint(tmp_path, "llama-linear-tied-bias")
    config, _, params = _load(folder)
    out = hf_checkpoint.save_checkpoint(tmp_path / "copy", config, params, "llama", {"bos_token_id": 1})
    from safetensors.numpy import load_file

    written = load_file(str(out / "model.safetensors"))
    assert sorted(written) == sorted(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(written[name], array)
    again = hf_checkpoint.read_config(out, MAX_LEN)
    assert again == config
    assert json.loads((out / "config.json").read_text())["bos_token_id"] == 1


def test_unknown_rope_scaling_refused(tmp_path):
    config = CONFIGS["llama-llama3-untied"] | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    folder = write_checkpoint(tmp_path / "yarn", config, random_weights(config, 0))
    with pytest.raises(ConfigError, match="rope_scaling: type 'yarn' is not supported; supported: default"):
        hf_checkpoint.read_config(folder, MAX_LEN)


def test_bad_folders_name_the_file(tmp_path):
    with pytest.raises(RunFileError, match="config.json: missing"):
        hf_checkpoint.read_config(tmp_path, MAX_LEN)
    gpt2 = write_checkpoint(tmp_path / "gpt2", {"model_type": "gpt2"}, {"x": np.zeros(1, np.float32)})
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported; supported: llama, qwen2, mistral"):
        hf_checkpoint.read_config(gpt2, MAX_LEN)
    folder, raw, weights = _checkpoint(tmp_path, "qwen2-tied")
    weights.pop("model.layers.1.mlp.up_proj.weight")
    write_checkpoint(folder, raw, weights)
    config = hf_checkpoint.read_config(folder, MAX_LEN)
    with pytest.raises(RunFileError, match="has no tensor 'model.layers.1.mlp.up_proj.weight'"):
        hf_checkpoint.load_params(folder, config)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunFileError, match="not a readable safetensors file"):
        hf_checkpoint.load_params(folder, config)
