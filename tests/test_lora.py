"""LoRA adapters on the decoder: zero B is the base model, the adapted logits equal the NumPy
reference with W + (α/r) A B merged in, and only the adapters (and the value head) train."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from decoder_reference import CONFIGS, forward, random_weights, write_checkpoint

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import hf_checkpoint, lora
from ppo_jax.rlhf.decoder import decoder_lm

RANK, ALPHA = 2, 4.0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    raw = CONFIGS["qwen2-tied"]
    weights = random_weights(raw, 0)
    folder = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "qwen2", raw, weights)
    config = lora.lora_config(hf_checkpoint.read_config(folder, 16), RANK, ALPHA)
    variables = hf_checkpoint.load_params(folder, config)
    adapters = lora.init_adapters(variables, jax.random.key(0), RANK)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, raw["vocab_size"], (2, 9)), jnp.int32)
    return raw, weights, decoder_lm(config), variables, adapters, tokens


def test_zero_b_gives_the_base_logits_exactly(model):
    _, _, lm, variables, adapters, tokens = model
    logits = jax.jit(lm.logits_fn)
    adapted = lora.with_adapters(variables, adapters)
    np.testing.assert_array_equal(np.asarray(logits(adapted, tokens)), np.asarray(logits(variables, tokens)))
    assert lora.base_only(adapted)["params"] is variables["params"]  # the reference shares the base arrays


def test_adapters_equal_merged_weights_in_the_reference(model):
    raw, weights, lm, variables, adapters, tokens = model
    rng = np.random.default_rng(1)
    adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.3, x.shape), jnp.float32), adapters)
    merged = dict(weights)
    for layer in range(raw["num_hidden_layers"]):
        for block, projections in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down"))):
            for p in projections:
                name = f"{p}_proj"
                ab = adapters[f"layers_{layer}"][block][name]
                delta = (ALPHA / RANK) * np.asarray(ab["a"]) @ np.asarray(ab["b"])  # [in, out]
                merged[f"model.layers.{layer}.{block}.{name}.weight"] = weights[
                    f"model.layers.{layer}.{block}.{name}.weight"
                ] + delta.T.astype(np.float32)
    logits = np.asarray(jax.jit(lm.logits_fn)(lora.with_adapters(variables, adapters), tokens))
    expected = np.stack([forward(raw, merged, row) for row in np.asarray(tokens)])
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected - np.stack([forward(raw, weights, row) for row in np.asarray(tokens)])).max() > 0.1


def test_only_adapters_and_value_head_train(model):
    _, _, lm, variables, adapters, tokens = model
    adapted = lora.with_adapters(variables, adapters)
    tx = lora.partition_optimizer(optax.adam(1e-2))
    state = tx.init(adapted)
    trainable = lora.count(adapters) + lora.count(variables["params"]["value_head"])
    assert lora.count(state) == 2 * trainable + 1  # two Adam moments per trainable scalar, and the step count

    def loss(v):
        return jnp.mean(lm.logits_fn(v, tokens) ** 2) + jnp.mean(lm.value_fn(v, tokens) - 1.0) ** 2

    @jax.jit
    def step(adapted, state):
        updates, state = tx.update(jax.grad(loss)(adapted), state, adapted)
        return optax.apply_updates(adapted, updates), state

    for _ in range(2):
        adapted, state = step(adapted, state)
    base = {k: v for k, v in variables["params"].items() if k != "value_head"}
    after = {k: v for k, v in adapted["params"].items() if k != "value_head"}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), base, after)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), adapters, adapted["lora"])
    assert min(jax.tree.leaves(moved)) > 0  # every A and B moved
    assert float(jnp.abs(adapted["params"]["value_head"]["kernel"]).max()) > 0


def test_bad_settings_are_refused(model):
    _, _, _, variables, _, _ = model
    with pytest.raises(ConfigError, match="lora_rank"):
        lora.lora_config(hf_checkpoint.read_config, 0, 1.0)
    with pytest.raises(ConfigError, match="lora_targets: unknown projection 'qkv'"):
        lora.init_adapters(variables, jax.random.key(0), 2, ("qkv",))
