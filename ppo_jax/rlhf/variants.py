"""Named algorithm variants for `ppo-jax rlhf --compare`: each is a set of config overrides, run
from one shared phase 1 (the same pretrained policy) and evaluated on the same held-out prompts.

| variant    | what changes from the GRPO defaults                                            |
|------------|--------------------------------------------------------------------------------|
| grpo       | nothing: seq-mean-token-mean, std-scaled group advantages, k3 in the loss,      |
|            | β = 0.04, ε = 0.2 (Shao et al. 2024)                                            |
| dr-grpo    | seq-mean-token-sum-norm, no std scaling, no KL (Liu et al. 2025)                |
| dapo       | token-mean, clip-higher ε_high = 0.28, equal-reward groups skipped, truncated  |
|            | completions masked, no KL (Yu et al. 2025)                                      |
| ppo        | a critic and GAE over tokens, k1 KL as a per-token reward (Ouyang et al. 2022)  |
| rloo       | leave-one-out baseline, unscaled (Ahmadian et al. 2024)                         |
| reinforce  | batch-mean baseline, unscaled (Williams 1992)                                   |
| gspo       | sequence-level ratio clipped at ε = 3e-4 / 4e-4, seq-mean-token-mean, no KL     |
|            | (Zheng et al. 2025, §5.1)                                                       |
| cispo      | clipped IS weight with stop-gradient, token-mean, no lower clip (ε_low = 1),    |
|            | ε_high = 0.28, no KL (MiniMax 2025; ε_high as Trinity-RFT's CISPO default)      |
| reinforce++| token returns with the k1 KL in the reward, normalised over the batch, PPO clip, |
|            | β = 0.05 as for ppo (Hu 2025)                                                   |
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.pipeline import RLHFResult, check_seeds, prepare, run_rlhf

VARIANTS: dict[str, dict[str, Any]] = {
    "grpo": {"algo": "grpo"},
    "dr-grpo": {
        "algo": "grpo",
        "loss_aggregation": "seq-mean-token-sum-norm",
        "scale_advantages": False,
        "kl_coef": 0.0,
    },
    "dapo": {
        "algo": "grpo",
        "loss_aggregation": "token-mean",
        "clip_eps_high": 0.28,
        "skip_equal_groups": True,
        "truncated_completions": "mask",
        "kl_coef": 0.0,
    },
    "ppo": {"algo": "ppo", "kl_coef": 0.05},
    "rloo": {"algo": "rloo", "scale_advantages": False},
    "reinforce": {"algo": "reinforce", "scale_advantages": False},
    "gspo": {
        "algo": "grpo",
        "policy_loss": "gspo",
        "loss_aggregation": "seq-mean-token-mean",
        "clip_eps_low": 3e-4,
        "clip_eps_high": 4e-4,
        "kl_coef": 0.0,
    },
    "cispo": {
        "algo": "grpo",
        "policy_loss": "cispo",
        "loss_aggregation": "token-mean",
        "clip_eps_low": 1.0,
        "clip_eps_high": 0.28,
        "kl_coef": 0.0,
    },
    "reinforce++": {"algo": "reinforce++", "kl_coef": 0.05},
}


def variant_configs(base: RLHFConfig, names: Sequence[str]) -> dict[str, RLHFConfig]:
    """Each named variant applied to `base` (validated; an unknown name raises `ConfigError`)."""
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ConfigError("compare", f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    return {name: base.replace(**VARIANTS[name]) for name in names}


def run_compare(
    base: RLHFConfig,
    names: Sequence[str] = tuple(VARIANTS),
    callback: Callable | None = None,
    on_result: Callable[[str, RLHFResult], None] | None = None,
    seeds: int = 1,
) -> dict[str, RLHFResult]:
    """Phase 1 once, then every variant's RL phase and evaluation. `callback` gets progress as in
    `run_rlhf` (with the phase named `<variant>/rl`); `on_result(name, result)` is called as soon
    as a variant finishes, so a caller can save it before the next one starts. Each variant runs
    `seeds` RL seeds at once."""
    configs = variant_configs(base, names)
    check_seeds(seeds)
    phase1 = prepare(base, callback)
    results = {}
    for name, config in configs.items():
        named = None if callback is None else functools.partial(_prefixed, callback, name)
        results[name] = run_rlhf(config, named, phase1, seeds)
        if on_result is not None:
            on_result(name, results[name])
    return results


def _prefixed(callback: Callable, name: str, phase: str, step, metrics) -> None:
    callback(f"{name}/{phase}", step, metrics)
