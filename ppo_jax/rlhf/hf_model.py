"""`--model hf:PATH` and `--task jsonl:PATH`: a Hugging Face checkpoint folder as the model of every
role, and a JSONL file (with the checkpoint's tokenizer) as the task.

The run records the model by reference (the folder's path in config.json's `model`), so
`load_policy` reads the checkpoint again for the parameter template. The decoder's KV cache holds
the task's prompt + completion length; with a JSONL task, prompts are left-padded with the
tokenizer's pad id and the decoder masks that padding. The initial parameters are the checkpoint's
(the scalar head at zero); with `lora_rank` > 0, RL trains adapters on them
(`pipeline.initial_params`) and the reference stays the checkpoint's weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax

from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import hf_checkpoint, lora
from ppo_jax.rlhf.decoder import DecoderConfig, decoder_lm
from ppo_jax.rlhf.jsonl_task import JsonlTask, check_task
from ppo_jax.rlhf.lm import LanguageModel


def is_checkpoint(config) -> bool:
    """Whether `config.model` names a checkpoint folder (`hf:PATH`)."""
    return config.model.startswith("hf:")


def checkpoint_folder(config) -> Path:
    """The folder of `--model hf:PATH`."""
    return Path(config.model.removeprefix("hf:"))


def jsonl_task(config) -> JsonlTask:
    """The task of `--task jsonl:PATH` (tokenizer from the checkpoint folder)."""
    task = JsonlTask(
        path=config.task.removeprefix("jsonl:"),
        model=str(checkpoint_folder(config)),
        prompt_field=config.prompt_field,
        answer_field=config.answer_field,
        reward_name=config.reward,
        completion_len=config.completion_len,
        held_out=config.held_out,
    )
    check_task(task)
    return task


def decoder_config(config, task) -> DecoderConfig:
    """The checkpoint's `DecoderConfig`, its cache sized for the task, LoRA scale and remat set."""
    folder = checkpoint_folder(config)
    pad_id = getattr(task, "pad_id", None)
    decoder = hf_checkpoint.read_config(folder, task.prompt_len + task.completion_len, config.model_dtype, pad_id)
    decoder = decoder._replace(remat=config.remat)
    if task.vocab_size > decoder.vocab_size:
        raise ConfigError(
            "model", f"{folder}: vocabulary of {decoder.vocab_size} tokens, the task needs {task.vocab_size}"
        )
    return lora.lora_config(decoder, config.lora_rank, config.lora_alpha) if config.lora_rank else decoder


def _checkpoint_init(folder: Path, decoder: DecoderConfig, key: jax.Array):
    return hf_checkpoint.load_params(folder, decoder)


def hf_lm(config, task) -> LanguageModel:
    """The decoder of the checkpoint; `init(key)` reads the checkpoint's weights (key unused)."""
    decoder = decoder_config(config, task)
    return decoder_lm(decoder)._replace(init=functools.partial(_checkpoint_init, checkpoint_folder(config), decoder))


def initial_policy(config, base, key: jax.Array):
    """RL's starting policy from the phase-1 variables: the same with `lora_rank` = 0, else the
    base with fresh adapters (B = 0: the same function)."""
    if not config.lora_rank:
        return base
    return lora.with_adapters(base, lora.init_adapters(base, key, config.lora_rank))
