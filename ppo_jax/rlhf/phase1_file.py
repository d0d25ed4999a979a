"""`<out>/phase1.msgpack`: what the RL phase starts from, saved once so that `--resume` continues
without pretraining (and fitting the reward model) again.

It holds the frozen record (reference policy, reward model, reward mean and std), the pretraining
and reward-model histories, the reward model's held-out accuracy, the pretraining config it was
made with (`RLHFConfig.pretraining_config().to_dict()`) and phase 1's wall and CPU seconds, in
flax's msgpack format. The file is written atomically (temp file + rename), so a run stopped
while writing it leaves none, and resuming then prepares phase 1 again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ppo_jax.errors import CheckpointError
from ppo_jax.rlhf.pretrain import PhaseResult, RewardModelResult
from ppo_jax.rlhf.rollout import Frozen

NAME = "phase1.msgpack"


class Saved(NamedTuple):
    """Phase 1 as read back: the pieces `pipeline.Phase1` is built from."""

    frozen: Frozen
    pretrain: PhaseResult
    reward_model: RewardModelResult | None
    timings: dict[str, float]
    cpu_seconds: dict[str, float]


def save(folder: Path, config: dict[str, Any], saved: Saved) -> Path:
    """Write `<folder>/phase1.msgpack` (see the module docstring); returns its path."""
    rm = saved.reward_model
    reward_model = None if rm is None else _host({"history": dict(rm.history), "eval_accuracy": rm.eval_accuracy})
    document = {
        "config": json.dumps(config, sort_keys=True),
        "frozen": _host(saved.frozen._asdict()),
        "pretrain_history": _host(dict(saved.pretrain.history)),
        "reward_model": reward_model,
        "timings": {k: float(v) for k, v in saved.timings.items()},
        "cpu_seconds": {k: float(v) for k, v in saved.cpu_seconds.items()},
    }
    path = Path(folder) / NAME
    tmp = path.with_suffix(".msgpack.tmp")
    tmp.write_bytes(serialization.msgpack_serialize(document))
    os.replace(tmp, path)
    return path


def _host(tree):
    """Every array leaf as a NumPy array (None subtrees kept)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _arrays(tree):
    return jax.tree.map(jnp.asarray, tree)


def load(folder: Path, config: dict[str, Any]) -> Saved | None:
    """Phase 1 saved in `folder` (None when there is no file); `CheckpointError` naming the file
    when it is unreadable or was made with another pretraining config."""
    path = Path(folder) / NAME
    if not path.exists():
        return None
    try:
        document = serialization.msgpack_restore(path.read_bytes())
        saved_config = json.loads(document["config"])
        frozen = Frozen(**{name: document["frozen"][name] for name in Frozen._fields})
        rm = document["reward_model"]
        timings = {k: float(v) for k, v in document["timings"].items()}
        cpu = {k: float(v) for k, v in document["cpu_seconds"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable phase-1 file ({err}); run again with --overwrite") from err
    if saved_config != json.loads(json.dumps(config, sort_keys=True)):
        differs = sorted(k for k in set(saved_config) | set(config) if saved_config.get(k) != config.get(k))
        raise CheckpointError(f"{path}: made with another pretraining config (differs in {', '.join(differs)})")
    frozen = _arrays(frozen)
    history = _arrays(dict(document["pretrain_history"]))
    reward_model = None
    if rm is not None:
        reward_model = RewardModelResult(frozen.reward, _arrays(dict(rm["history"])), jnp.asarray(rm["eval_accuracy"]))
    return Saved(frozen, PhaseResult(frozen.reference, history), reward_model, timings, cpu)
