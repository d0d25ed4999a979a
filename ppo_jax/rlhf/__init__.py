"""Language-model RL: pretraining on a generated corpus, a reward model when the task needs one,
and RL fine-tuning (PPO, GRPO, RLOO, REINFORCE) of any `LanguageModel` with the loss options of
the literature, each phase one jitted program.

Modules: `config` (RLHFConfig), `arithmetic` and `preference` (the tasks; `task` holds the
letter corpus), `lm` (the model record and its samplers), `transformer` and `model` (the two
shipped models), `setup` (task and models of a run), `pretrain` (phase 1, reward model),
`rollout` (sampling, scoring, targets), `finetune` (phase 2), `pipeline` (`prepare`, `run_rlhf`).
Hugging Face checkpoints: `decoder` (the Llama / Qwen2 / Mistral family) with `rope`,
`hf_checkpoint` (folder I/O), `tokenizer`, `lora`, `jsonl_task` and `rewards` (your data),
`hf_model` (`--model hf:PATH`, `--task jsonl:PATH`).
"""

from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.lm import LanguageModel, recompute_sampler
from ppo_jax.rlhf.pipeline import Phase1, RLHFResult, prepare, run_rlhf
from ppo_jax.rlhf.rollout import Frozen, RLParams
from ppo_jax.rlhf.setup import RLSetup, make_setup

__all__ = [
    "Frozen",
    "LanguageModel",
    "Phase1",
    "RLHFConfig",
    "RLHFResult",
    "RLParams",
    "RLSetup",
    "make_setup",
    "prepare",
    "recompute_sampler",
    "run_rlhf",
]
