"""Low-rank adapters (LoRA, Hu et al. 2021) for the decoder family: only the adapters train, and
the reference policy is the base weights without them — the same arrays, no second copy.

A targeted projection y = x W (W [in, out], frozen) becomes

    y = x W + (α / r) (x A) B,   A [in, r] ~ N(0, 1/in),  B [r, out] = 0

so at the start the adapted model equals the base one exactly. The adapters live in a `lora`
variable collection next to the base `params`:

    variables = {"params": base, "lora": adapters}     the policy (trained: `lora`, `value_head`)
    reference = {"params": base}                       the same base arrays, adapters absent

`decoder.Dense` adds the adapter when its layer has one. In the RL phase the carried state holds
only the trainable part (`trainable_part`: the adapters and `TRAINABLE_PARAMS`), and every use of
the policy fills in the base from the reference (`with_base`): the base exists once, as the
reference, has no gradient and no optimizer state. Memory with Adam in float32 is then about 4
bytes per base parameter (the weights, 2 in bfloat16) plus 16 per adapter parameter, against 16
per parameter (plus the reference's 4) for full fine-tuning. `partition_optimizer` is the same
rule over a whole variables tree (zero update and no Adam moments for the base).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf.decoder import DecoderConfig

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINABLE_PARAMS = ("value_head",)  # base parameters that still train with adapters (PPO's critic head)


def lora_config(config: DecoderConfig, rank: int, alpha: float) -> DecoderConfig:
    """`config` with the adapter scale α / r; raises `ConfigError` for a rank below 1."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError("lora_rank", f"must be a positive integer, got {rank!r}")
    return config._replace(lora_scale=float(alpha) / rank)


def _targeted(tree: dict, targets: tuple[str, ...], path: tuple[str, ...] = ()):
    """(path, kernel) of every kernel whose layer name is in `targets`."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _targeted(value, targets, path + (name,))
        elif name == "kernel" and path and path[-1] in targets:
            yield path, value


def init_adapters(variables: dict, key: jax.Array, rank: int, targets: tuple[str, ...] = TARGETS) -> dict:
    """The `lora` collection for every targeted projection of `variables["params"]`:
    {…layer path…: {"a": [in, r] ~ N(0, 1/in), "b": zeros [r, out]}} in float32."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ConfigError("lora_targets", f"unknown projection {unknown[0]!r}; known: {', '.join(TARGETS)}")
    found = list(_targeted(variables["params"], targets))
    if not found:
        raise ConfigError("lora_targets", f"none of {', '.join(targets)} is in the model's parameters")
    adapters: dict = {}
    for (path, kernel), k in zip(found, jax.random.split(key, len(found)), strict=True):
        fan_in, fan_out = kernel.shape
        node = adapters
        for name in path:
            node = node.setdefault(name, {})
        node["a"] = jax.random.normal(k, (fan_in, rank), jnp.float32) / jnp.sqrt(fan_in)
        node["b"] = jnp.zeros((rank, fan_out), jnp.float32)
    return adapters


def with_adapters(variables: dict, adapters: dict) -> dict:
    """The adapted model's variables: the base `params` (the same arrays) and `lora`."""
    return {"params": variables["params"], "lora": adapters}


def base_only(variables: dict) -> dict:
    """The reference: the base `params` alone (the same arrays, adapters dropped)."""
    return {"params": variables["params"]}


def is_adapted(variables: Any) -> bool:
    """Whether `variables` is a LoRA tree (it has a `lora` collection)."""
    return isinstance(variables, dict) and "lora" in variables


def trainable_part(variables: Any) -> Any:
    """What trains of a LoRA tree: {"params": the `TRAINABLE_PARAMS` layers, "lora": adapters};
    any other tree (full fine-tuning, None) is returned as it is."""
    if not is_adapted(variables):
        return variables
    params = {k: v for k, v in variables["params"].items() if k in TRAINABLE_PARAMS}
    return {"params": params, "lora": variables["lora"]}


def with_base(part: Any, reference: Any) -> Any:
    """The whole variables of a LoRA `part` (`trainable_part`): the reference's base `params`
    (the same arrays) overridden by the part's trainable layers, and its adapters. Any other tree
    is returned as it is."""
    if not is_adapted(part):
        return part
    return {"params": {**reference["params"], **part["params"]}, "lora": part["lora"]}


def trainable_labels(tree: Any) -> Any:
    """ "train" for every adapter leaf and `TRAINABLE_PARAMS` layer, "frozen" for the rest of the
    base, over any pytree that holds LoRA variables (e.g. `RLParams` of them)."""

    def label(path, _):
        keys = [getattr(entry, "key", None) for entry in path]
        return "train" if "lora" in keys or any(k in TRAINABLE_PARAMS for k in keys) else "frozen"

    return jax.tree_util.tree_map_with_path(label, tree)


def partition_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the trainable leaves only (its state is only theirs); a zero update for the base."""
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, trainable_labels)


def count(tree: Any) -> int:
    """Number of scalars in a pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))
