"""How much memory one RL update of a decoder needs, per device, estimated before anything compiles,
and the check that refuses a run that cannot fit, naming the flags that would make it fit.

With P the parameters (b bytes each: 4 in float32, 2 in bfloat16), T the trained ones (all P for
full fine-tuning; with LoRA of rank r, r·(in + out) per adapted projection, in float32, plus the
scalar head), n the devices of the parameter mesh and S the seeds run at once:

    weights     = P·b (the reference; with LoRA also the policy's base) + T·b_T (the trained
                  weights: full fine-tuning P·b, [+ P·b for PPO's critic]; LoRA the adapters)
    optimizer   = 2 · T · b_T                  Adam's two moments (b_T: the trained leaves' bytes)
    gradients   = T · b_T
    step        = 2 · T · b_T                  the optimizer step's temporaries: the update tree and
                  the new trained weights beside the old ones (measured: docs/llm.md)
    upcast      = P · 4 on a CPU with bfloat16 weights: float32 copies of the weights for XLA's
                  CPU matrix products, as the measured temporaries show (docs/llm.md); else 0
    activations = what the backward pass of one minibatch of B_mb = minibatch / n sequences of
                  N = P_len + L − 1 tokens keeps:
                    per layer and token (dtype b): 2d + 2(H + 2H_kv)D + HD + 3d + 4I, plus the
                    attention scores and weights H·N (two float32 and one b each);
                    with remat only each layer's input d per token is kept, and one layer's
                    internals at a time;
                    the head: 4 · V float32 per token (logits, log-softmax, softmax, their gradient)
    sampling    = the KV cache 2 · layers · B · H_kv · N_max · D · b, and scoring the sampled
                  batch B_s = min(score_batch, B) rows at a time (`--score-batch`, 0: all B):
                  4 · B_s · N · V float32 (policy and reference logits, log-softmaxes)

    total ≈ weights + optimizer + upcast + max(sampling, gradients + activations + step)   (per seed × S,
            the reference once), each sharded term divided by n as `rlhf.sharding` splits it.

It is an estimate (XLA fuses and reuses buffers, and the program, the rollout and the runtime
take a little more); `docs/llm.md` sets it beside measured peaks. The available memory is the
device's free memory on an accelerator and the host's `MemAvailable` on a CPU, or
`PPO_JAX_MEMORY_LIMIT` (bytes, or a number with K/M/G/T[iB]) when set.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import hf_model, lora, sharding
from ppo_jax.rlhf.decoder import Decoder, DecoderConfig
from ppo_jax.rlhf.setup import make_setup
from ppo_jax.runtime.cpu import host_available_bytes

LIMIT_ENV = "PPO_JAX_MEMORY_LIMIT"
GIB = 1 << 30
_HEAD_COPIES = 4  # float32 [tokens, V] tensors alive in the loss's backward pass
_SCORE_COPIES = 4  # and while scoring a sampled batch

# The shapes of Qwen2-0.5B's config.json (hidden 896, 24 layers, 14 query / 2 key-value heads,
# intermediate 4864, vocabulary 151936, tied embeddings, q/k/v biases): the model of the memory table
# in docs/llm.md. `max_len` is a placeholder; set it to prompt + completion length.
QWEN2_05B = DecoderConfig(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    head_dim=64,
    max_len=32,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    qkv_bias=True,
    tie_embeddings=True,
)


class MemoryEstimate(NamedTuple):
    """Bytes per device of one RL update, by what holds them (see the module docstring)."""

    weights: int
    optimizer: int
    gradients: int
    activations: int
    sampling: int
    parameters: int  # P, the model's parameter count
    trained: int  # T, the trained parameter count
    step: int = 0  # the optimizer step's temporaries
    upcast: int = 0  # float32 copies of bfloat16 weights (CPU)

    @property
    def total(self) -> int:
        training = self.gradients + self.activations + self.step
        return self.weights + self.optimizer + self.upcast + max(self.sampling, training)

    def describe(self) -> str:
        """One line: the total and its parts in GiB."""
        unit, size = ("GiB", GIB) if self.total >= GIB / 10 else ("MiB", 1 << 20)
        parts = ("weights", "optimizer", "gradients", "step", "activations", "sampling")
        parts += ("upcast",) if self.upcast else ()
        detail = ", ".join(f"{name} {getattr(self, name) / size:.2f}" for name in parts)
        return (
            f"memory estimate {self.total / size:.2f} {unit} per device ({detail}; "
            f"{self.parameters / 1e6:.1f}M parameters, {self.trained / 1e6:.2f}M trained)"
        )


class UpdateShape(NamedTuple):
    """The sizes of one RL update that set its memory."""

    batch: int  # completions sampled per update (rl_batch)
    minibatch: int  # completions per gradient step (rl_batch / num_minibatches)
    prompt_len: int
    completion_len: int
    lora_rank: int = 0
    critic: bool = False  # PPO's critic: a second model
    seeds: int = 1
    score_batch: int = 0  # sequences scored at once after sampling (0: the whole batch)


def parameter_shapes(config: DecoderConfig) -> Any:
    """The decoder's variables as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    return _shapes(config._replace(max_len=2, pad_id=None, lora_scale=1.0, remat=False))


@functools.lru_cache(maxsize=8)
def _shapes(config: DecoderConfig) -> Any:
    tokens = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return jax.eval_shape(Decoder(config).init, jax.random.key(0), tokens)


def _bytes(leaf, devices: int, min_size: int) -> int:
    """Bytes of one leaf on one device under `sharding.leaf_spec`."""
    size = int(np.prod(leaf.shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    split = sharding.leaf_spec(tuple(leaf.shape), devices, min_size) != sharding.P()
    return size // devices if split else size


def tree_bytes(tree: Any, devices: int = 1, min_size: int = sharding.MIN_SHARDED) -> int:
    """Bytes per device of a pytree of arrays or shapes, sharded by `rlhf.sharding`'s rule."""
    return sum(_bytes(leaf, devices, min_size) for leaf in jax.tree.leaves(tree))


def _adapter_shapes(variables: Any, rank: int) -> Any:
    """ShapeDtypeStructs of the adapters (float32 A [in, r], B [r, out]) and the trained layers."""
    shapes = [
        jax.ShapeDtypeStruct(s, jnp.float32)
        for _, kernel in lora._targeted(variables["params"], lora.TARGETS)
        for s in ((kernel.shape[0], rank), (rank, kernel.shape[1]))
    ]
    heads = [variables["params"][k] for k in lora.TRAINABLE_PARAMS if k in variables["params"]]
    return shapes + heads


def activation_bytes(config: DecoderConfig, sequences: int, tokens: int) -> int:
    """What one backward pass over `sequences` × `tokens` keeps (module docstring), in bytes."""
    c, b = config, jnp.dtype(config.param_dtype).itemsize
    heads, kv, hd, d = c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size
    per_token = (2 * d + 2 * (heads + 2 * kv) * hd + heads * hd + 3 * d + 4 * c.intermediate_size) * b
    per_token += heads * tokens * (8 + b)  # scores and softmax in float32, weights in the dtype
    layer = sequences * tokens * per_token
    kept = c.num_layers * sequences * tokens * d * b + layer if c.remat else c.num_layers * layer
    return kept + _HEAD_COPIES * sequences * tokens * c.vocab_size * 4


def sampling_bytes(config: DecoderConfig, sequences: int, tokens: int, scored: int = 0) -> int:
    """The KV cache of `sequences` rows and the logits of scoring `scored` of them at a time (0:
    all) (module docstring)."""
    b = jnp.dtype(config.param_dtype).itemsize
    cache = 2 * config.num_layers * sequences * config.num_kv_heads * config.max_len * config.head_dim * b
    scored = min(scored, sequences) if scored else sequences
    return cache + _SCORE_COPIES * scored * tokens * config.vocab_size * 4


def estimate(
    config: DecoderConfig, shape: UpdateShape, devices: int = 1, platform: str | None = None
) -> MemoryEstimate:
    """Per-device bytes of one RL update of the decoder `config` (remat as the config says) with
    parameters sharded over `devices` (1: no mesh) on `platform` (default: JAX's backend)."""
    platform = platform or jax.default_backend()
    variables = parameter_shapes(config)
    model = tree_bytes(variables, devices)
    trained_tree = _adapter_shapes(variables, shape.lora_rank) if shape.lora_rank else variables
    copies = 1 + shape.critic  # the critic is a second trained model
    trained = tree_bytes(trained_tree, devices) * copies
    # The reference once; each seed's trained weights (full: the policy, LoRA: its adapters).
    weights = model + trained * shape.seeds
    split = devices if shape.minibatch % devices == 0 else 1
    tokens = shape.prompt_len + shape.completion_len - 1
    act = activation_bytes(config, shape.minibatch // split, tokens) * copies
    batch_split = devices if shape.batch % devices == 0 else 1
    samp = sampling_bytes(config, shape.batch // batch_split, tokens, shape.score_batch)
    parameters = int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables)))
    upcast = parameters * 4 // devices if platform == "cpu" and config.dtype == "bfloat16" else 0
    return MemoryEstimate(
        weights=int(weights),
        optimizer=int(2 * trained * shape.seeds),
        gradients=int(trained * shape.seeds),
        step=int(2 * trained * shape.seeds),
        upcast=int(upcast),
        activations=int(act * shape.seeds),
        sampling=int(samp * shape.seeds),
        parameters=parameters,
        trained=int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trained_tree)) * copies),
    )


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """'8G', '8GiB', '512M', '1e9' -> bytes (binary units); raises `ConfigError` naming the variable."""
    match = re.fullmatch(r"\s*([0-9.e+]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    try:
        value = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(LIMIT_ENV, f"must be a positive size such as 8G or 512MiB, got {text!r}")
    return int(value)


def available_bytes() -> tuple[int, str]:
    """(bytes, where): `PPO_JAX_MEMORY_LIMIT`, else the first device's free memory on an
    accelerator, else the host's available RAM."""
    if os.environ.get(LIMIT_ENV):
        return parse_bytes(os.environ[LIMIT_ENV]), LIMIT_ENV
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"free on {device.device_kind}"
    return host_available_bytes(), "available host RAM"


def suggestions(config: DecoderConfig, shape: UpdateShape, est: MemoryEstimate, devices: int) -> list[str]:
    """The flags that would shrink the largest parts of `est`, most effective first."""
    out = []
    if not shape.lora_rank and est.weights + est.optimizer + est.gradients > est.activations:
        out.append("--lora-rank 16 (train adapters: no optimizer state or second copy of the weights)")
    if config.dtype == "float32":
        out.append("--model-dtype bfloat16 (half the weights)")
    if not config.remat and est.activations > est.weights / 4:
        out.append("--remat true (keep one layer's activations)")
    if len(jax.devices()) > devices:
        out.append("--shard-params true (split weights and optimizer state over the devices)")
    batch = "a smaller --rl-batch (the KV cache of every sequence sampled at once)"
    if shape.score_batch == 0 or shape.score_batch > 8:
        batch = "--score-batch 8 (score 8 sampled sequences at a time: their [8, T, V] logits); " + batch
    minibatches = "more --num-minibatches (fewer sequences per gradient step)"
    out.extend([batch, minibatches] if est.sampling >= est.activations else [minibatches, batch])
    out.append("a shorter --completion-len")
    return out


def check_fits(config: DecoderConfig, shape: UpdateShape, est: MemoryEstimate, devices: int = 1) -> None:
    """Raise `ConfigError` ("memory") when `est` exceeds the available memory, naming the flags
    to change; does nothing when it fits."""
    available, where = available_bytes()
    if est.total <= available:
        return
    raise ConfigError(
        "memory",
        f"one RL update needs about {est.total / GIB:.2f} GiB per device but {available / GIB:.2f} GiB are "
        f"available ({where}); try " + "; ".join(suggestions(config, shape, est, devices)),
    )


class RunMemory(NamedTuple):
    """The estimate of a configured run and what it was computed from."""

    estimate: MemoryEstimate
    decoder: DecoderConfig
    shape: UpdateShape
    devices: int

    def check(self) -> None:
        """`check_fits` of this run."""
        check_fits(self.decoder, self.shape, self.estimate, self.devices)


def run_memory(config, seeds: int = 1) -> RunMemory | None:
    """The estimate of one RL update of `config` (an `RLHFConfig` with `--model hf:PATH`; None for
    the shipped toy models), with its LoRA rank, remat and sharding settings and `seeds` seeds."""
    if not hf_model.is_checkpoint(config):
        return None
    setup = make_setup(config)
    decoder = hf_model.decoder_config(config, setup.task)
    shape = UpdateShape(
        batch=config.rl_batch,
        minibatch=config.rl_batch // config.num_minibatches,
        prompt_len=setup.task.prompt_len,
        completion_len=setup.task.completion_len,
        lora_rank=config.lora_rank,
        critic=config.algorithm.critic,
        seeds=seeds,
        score_batch=config.score_batch,
    )
    devices = setup.sharding.devices if setup.sharding is not None else 1
    return RunMemory(estimate(decoder, shape, devices), decoder, shape, devices)
