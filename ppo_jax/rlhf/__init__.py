"""Token-level RLHF: a tiny GRU language model pretrained on a generated corpus, a reward model
learned from preference pairs labelled by a hidden rule, and RL fine-tuning with PPO or GRPO
against that reward with a KL penalty to the frozen pretrained policy.

Modules: `config` (RLHFConfig), `task` (vocabulary, hidden rule, corpus, preference pairs),
`model` (the GRU), `pretrain` (phase 1 and the reward model), `finetune` (phase 2),
`pipeline` (`prepare` for phase 1 and the reward model, `run_rlhf` for the whole run).
"""

from ppo_jax.rlhf.config import RLHFConfig
from ppo_jax.rlhf.pipeline import Phase1, RLHFParams, RLHFResult, prepare, run_rlhf

__all__ = ["Phase1", "RLHFConfig", "RLHFParams", "RLHFResult", "prepare", "run_rlhf"]
