"""Memory for larger language models: per-layer rematerialisation, LoRA without a second copy of
the base, parameters and optimizer state sharded over 2 host devices, and the memory estimate
with the error that names the flags to change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from decoder_reference import CONFIGS, random_weights, write_checkpoint, write_tokenizer

from ppo_jax.commands import rlhf as rlhf_command
from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import hf_checkpoint, lora, memory, sharding
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.decoder import decoder_lm
from ppo_jax.rlhf.finetune import init_rl_state, rl_loss, rl_optimizer, trained_loss
from ppo_jax.rlhf.rollout import RLParams, TrainBatch
from ppo_jax.rlhf.setup import make_setup

ROOT = Path(__file__).resolve().parents[1]
RANK = 2


class CountTask(NamedTuple):
    """A task with a graded reward (the fraction of completion tokens equal to 3), so that every
    group has advantages to learn from even with a random model."""

    vocab_size: int = 13
    eos_id: int = 0
    prompt_len: int = 3
    completion_len: int = 5

    def prompts(self, key, num, held_out=False):
        return jax.random.randint(key, (num, self.prompt_len), 1, self.vocab_size)

    def reward(self, prompts, completions):
        return jnp.mean((completions == 3).astype(jnp.float32), axis=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    raw = CONFIGS["qwen2-tied"]
    folder = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "qwen2", raw, random_weights(raw, 0))
    config = hf_checkpoint.read_config(folder, 16)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, raw["vocab_size"], (2, 9)), jnp.int32)
    return config, hf_checkpoint.load_params(folder, config), tokens


def _nll_and_value(lm, variables, tokens):
    """Mean next-token negative log-likelihood plus a value-head term: touches every parameter."""
    log_probs = jax.nn.log_softmax(lm.logits_fn(variables, tokens[:, :-1]))
    nll = -jnp.mean(jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1))
    return nll + jnp.mean((lm.value_fn(variables, tokens) - 1.0) ** 2)


def test_remat_gives_the_same_loss_and_gradients(tiny):
    config, variables, tokens = tiny
    results = []
    for remat in (False, True):
        lm = decoder_lm(config._replace(remat=remat))
        grad_fn = jax.value_and_grad(lambda v, lm=lm: _nll_and_value(lm, v, tokens))
        traced = jax.jit(grad_fn).trace(variables)
        # Each decoder layer is one rematerialised block, in the forward pass and in its transpose.
        assert str(traced.jaxpr).count("remat2[") == (2 * config.num_layers if remat else 0)
        results.append(traced.lower().compile()(variables))
    (loss, grads), (loss_r, grads_r) = results
    np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3  # gradients are not all zero


def _batch(tokens: jax.Array, prompt_len: int) -> TrainBatch:
    completions = tokens[:, prompt_len:]
    zeros = jnp.zeros(completions.shape)
    advantages = jnp.asarray([[1.0], [-0.5]]) * jnp.ones(completions.shape)
    mask = jnp.ones(completions.shape)
    return TrainBatch(tokens[:, :prompt_len], completions, mask, zeros - 2.0, zeros - 2.0, advantages, zeros, zeros)


def test_lora_state_holds_only_adapters_and_steps_like_the_masked_optimizer(tiny):
    """With LoRA the RL state carries the adapters and the value head only (the base is the
    reference's, one copy), and a gradient step on it equals the step of the whole variables
    tree with the base masked out of the optimizer."""
    config, variables, tokens = tiny
    lm = decoder_lm(lora.lora_config(config, RANK, 4.0))
    setup = make_setup(RLHFConfig(rl_batch=2, group_size=2, num_minibatches=1))._replace(policy=lm)
    hp = setup.config.rl_hyperparams()
    adapters = jax.tree.map(lambda x: x + 0.1, lora.init_adapters(variables, jax.random.key(1), RANK))
    adapted = lora.with_adapters(variables, adapters)
    state = init_rl_state(setup, hp, RLParams(adapted, None), jax.random.key(0))
    trained = lora.count(adapters) + lora.count(variables["params"]["value_head"])
    assert lora.count(state.params) == trained  # no base weights in the carry
    assert lora.count(state.opt_state) == 2 * trained + 1  # Adam's moments and its step count
    batch = _batch(tokens, 4)
    tx = rl_optimizer(setup, hp)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: trained_loss(setup, hp, variables, p, batch)[0])(params)
        updates, _ = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates)

    # Reference: the whole tree, base frozen by `lora.partition_optimizer`.
    full_tx = lora.partition_optimizer(tx)

    @jax.jit
    def full_step(params):
        grads = jax.grad(lambda p: rl_loss(setup, hp, p, batch)[0])(params)
        updates, _ = full_tx.update(grads, full_tx.init(params), params)
        return optax.apply_updates(params, updates)

    new, expected = step(state.params, state.opt_state), full_step(RLParams(adapted, None))
    for name in ("lora",):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
            new.policy[name],
            expected.policy[name],
        )
    np.testing.assert_allclose(
        np.asarray(new.policy["params"]["value_head"]["kernel"]),
        np.asarray(expected.policy["params"]["value_head"]["kernel"]),
        atol=1e-6,
    )
    moved = new.policy["lora"]["layers_0"]["mlp"]["up_proj"]["b"] - adapters["layers_0"]["mlp"]["up_proj"]["b"]
    assert float(jnp.abs(moved).max()) > 0


def _qwen2_05b_count(rank: int = 0) -> int:
    """Parameters of Qwen2-0.5B by hand (Hugging Face shapes), plus the scalar head (d + 1); with
    a rank, the trained LoRA parameters: r · (in + out) per projection, plus the head."""
    d, inter, vocab, layers, q, kv = 896, 4864, 151936, 24, 14 * 64, 2 * 64
    head = d + 1
    if rank:
        per_layer = (d + q) + 2 * (d + kv) + (q + d) + 2 * (d + inter) + (inter + d)
        return rank * per_layer * layers + head
    per_layer = (d * q + q) + 2 * (d * kv + kv) + q * d + 3 * d * inter + 2 * d
    return vocab * d + layers * per_layer + d + head


def test_estimate_of_a_qwen2_05b_update_by_hand():
    shape = memory.UpdateShape(batch=8, minibatch=4, prompt_len=16, completion_len=16)
    full = memory.estimate(memory.QWEN2_05B, shape)
    count = _qwen2_05b_count()
    assert full.parameters == count == 494_033_665
    assert full.weights == 2 * 4 * count and full.optimizer == 2 * 4 * count and full.gradients == 4 * count
    assert full.step == 2 * 4 * count  # the update tree and the new weights
    logits = 8 * 31 * 151936 * 4  # one float32 [B, N, V] of the sampled batch
    assert full.sampling > 4 * logits and full.activations > 4 * logits // 2
    lora_est = memory.estimate(memory.QWEN2_05B, shape._replace(lora_rank=16))
    assert lora_est.trained == _qwen2_05b_count(16)
    assert lora_est.weights == 4 * count + 4 * lora_est.trained  # the base once, float32 adapters
    bf16 = memory.estimate(memory.QWEN2_05B._replace(dtype="bfloat16"), shape, platform="gpu")
    assert bf16.weights == 2 * (2 * (count - 897) + 4 * 897)  # the scalar head stays float32
    assert bf16.upcast == 0 and full.upcast == 0
    on_cpu = memory.estimate(memory.QWEN2_05B._replace(dtype="bfloat16"), shape, platform="cpu")
    assert on_cpu.upcast == 4 * count and on_cpu.total == bf16.total + 4 * count  # float32 copies for the CPU's dots
    remat = memory.estimate(memory.QWEN2_05B._replace(remat=True), shape)
    assert remat.activations < full.activations and remat.sampling == full.sampling
    halves = memory.estimate(memory.QWEN2_05B, shape, devices=2)
    assert 0.49 < halves.weights / full.weights < 0.51 and halves.activations < full.activations


def test_error_names_the_flags_when_the_estimate_does_not_fit(monkeypatch):
    shape = memory.UpdateShape(batch=8, minibatch=4, prompt_len=16, completion_len=16)
    est = memory.estimate(memory.QWEN2_05B, shape)
    monkeypatch.setenv(memory.LIMIT_ENV, "2GiB")
    with pytest.raises(ConfigError) as err:
        memory.check_fits(memory.QWEN2_05B, shape, est)
    text = str(err.value)
    assert text.startswith("memory: ") and "\n" not in text and "2.00 GiB are available (PPO_JAX_MEMORY_LIMIT)" in text
    for flag in ("--lora-rank", "--model-dtype bfloat16", "--rl-batch", "--num-minibatches", "--completion-len"):
        assert flag in text
    monkeypatch.setenv(memory.LIMIT_ENV, "64G")
    memory.check_fits(memory.QWEN2_05B, shape, est)  # fits: no error
    assert memory.parse_bytes("1.5k") == 1536 and memory.parse_bytes("3MiB") == 3 << 20
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ConfigError, match=memory.LIMIT_ENV):
            memory.parse_bytes(bad)


def test_leaf_spec_splits_the_largest_divisible_dimension():
    assert sharding.leaf_spec((151936, 896), 2, 1024) == sharding.P(sharding.AXIS)
    assert sharding.leaf_spec((896, 4864), 2, 1024) == sharding.P(None, sharding.AXIS)
    assert sharding.leaf_spec((896,), 2, 1024) == sharding.P()  # below the size threshold
    assert sharding.leaf_spec((33, 1025), 2, 16) == sharding.P()  # no divisible dimension
    assert sharding.leaf_spec((896, 4864), 1, 16) == sharding.P()


SHARDED_RUN = """
    import json, tempfile, jax, jax.numpy as jnp, numpy as np
    from test_lm_memory import CountTask
    from ppo_jax.errors import RunStopped
    from ppo_jax.rlhf.rl_run import RunOptions, run_rl_phase
    from ppo_jax.runtime.files import params_sha256
    from ppo_jax.rlhf import lora, sharding
    from ppo_jax.rlhf.config import RLHFConfig
    from ppo_jax.rlhf.decoder import DecoderConfig, decoder_lm
    from ppo_jax.rlhf.finetune import finetune
    from ppo_jax.rlhf.rollout import Frozen, RLParams
    from ppo_jax.rlhf.setup import make_setup

    task = CountTask()
    decoder = DecoderConfig(vocab_size=13, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=8, max_len=8, qkv_bias=True, tie_embeddings=True)
    out = {}
    for rank in (0,):  # LoRA (rank 2) runs the same way; left out of the suite for time
        config = RLHFConfig(rl_updates=2, rl_batch=16, group_size=4, num_minibatches=2, num_epochs=1, rl_lr=1e-3)
        lm = decoder_lm(lora.lora_config(decoder, rank, 4.0) if rank else decoder)
        base = lm.init(jax.random.key(1))
        policy = lora.with_adapters(base, lora.init_adapters(base, jax.random.key(2), rank)) if rank else base
        frozen = Frozen(base, None, jnp.float32(0.0), jnp.float32(1.0))
        one = make_setup(config)._replace(task=task, policy=lm)
        two = one._replace(sharding=sharding.make_sharding(min_size=64))
        runs = [finetune(s, RLParams(policy, None), frozen, jax.random.key(0)) for s in (one, two)]
        leaves = [jax.tree.leaves(r.params.policy) for r in runs]
        emb = runs[1].params.policy["params"]["embed_tokens"]["embedding"]
        out[rank] = {
            "devices": len(jax.devices()),
            "param_diff": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*leaves)),
            "moved": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves[0], jax.tree.leaves(policy))),
            "shard_shapes": [list(s.data.shape) for s in emb.addressable_shards],
            "history": {k: [np.asarray(r.history[k]).tolist() for r in runs]
                        for k in ("train_policy_loss", "train_kl_loss", "reward", "train_grad_norm")},
        }
    # Stopped at update 1 on the mesh and resumed: the restored state goes back onto the mesh.
    class Requested:
        requested = True

    keys = jax.random.split(jax.random.key(0), 1)
    go = lambda options=None: run_rl_phase(two, RLParams(policy, None), frozen, keys, config.rl_hyperparams(),
                                           None, options)
    whole, folder = go()[0], tempfile.mkdtemp()
    try:
        go(RunOptions(folder, checkpoint_every=1, stop=Requested()))
    except RunStopped as stop:
        out["stopped_at"] = stop.update
    resumed = go(RunOptions(folder, checkpoint_every=1, resume=True))[0]
    out["resumed_equal"] = params_sha256(resumed.params) == params_sha256(whole.params)
    out["resumed_devices"] = len(jax.tree.leaves(resumed.params)[0].sharding.device_set)
    print(json.dumps(out))
"""


def test_sharded_over_two_devices_equals_one_device():
    """Two updates of GRPO with parameters, optimizer state and batches sharded over 2 host devices
    give the losses and parameters of the single-device run (to float32 summation order); a
    sharded run stopped at a checkpoint and resumed ends with the uninterrupted run's parameters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SHARDED_RUN)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # a loaded 2-core machine; about a minute otherwise
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("stopped_at") == 1 and out.pop("resumed_devices") == 2
    assert out.pop("resumed_equal")  # --resume with --shard-params: the uninterrupted run's parameters
    for run in out.values():
        assert run["devices"] == 2
        assert run["shard_shapes"] == [[13, 16], [13, 16]]  # the embedding is split, not replicated
        assert run["moved"] > 1e-4  # training changed the parameters
        assert run["param_diff"] < 1e-6
        for name, (one, two) in run["history"].items():
            np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-7, err_msg=name)
        assert max(abs(x) for x in run["history"]["train_policy_loss"][0]) > 1e-4  # a loss to compare


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
    data = root / "sums.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model = root / "model"
    vocab = write_tokenizer(model, [r["prompt"] + r["answer"] for r in rows])
    raw = CONFIGS["qwen2-tied"] | {"vocab_size": vocab, "eos_token_id": 0}
    write_checkpoint(model, raw, random_weights(raw, 0))
    return model, data


def test_cli_prints_the_estimate_and_refuses_a_run_that_does_not_fit(hf_folders, tmp_path, monkeypatch, capsys):
    model, data = hf_folders
    flags = ["--model", f"hf:{model}", "--task", f"jsonl:{data}", "--completion-len", "4", "--rl-batch", "8"]
    flags += ["--group-size", "4", "--remat", "true", "--out", str(tmp_path / "run")]
    monkeypatch.setenv(memory.LIMIT_ENV, "1K")
    assert rlhf_command.main(flags) == 2
    out, err = capsys.readouterr()
    paths = {"model": f"hf:{model}", "task": f"jsonl:{data}"}
    config = RLHFConfig(**paths, completion_len=4, rl_batch=8, group_size=4, remat=True)
    run = memory.run_memory(config)
    assert run.decoder.remat and run.shape.batch == 8 and run.shape.completion_len == 4
    assert run.estimate.describe() in out  # printed before anything compiles
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "memory: one RL update needs about" in lines[0] and "PPO_JAX_MEMORY_LIMIT" in lines[0]
    assert "--lora-rank" in lines[0] and "--remat" not in lines[0]  # remat is on already
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    assert rlhf_command.main(["--remat", "true", "--out", str(tmp_path / "toy")]) == 2
    assert "remat: is for --model hf:PATH" in capsys.readouterr().err
