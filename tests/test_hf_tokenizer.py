"""Checkpoint tokenizers: special ids from the checkpoint's files, the chat template, encode/decode."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.rlhf.tokenizer import load_tokenizer

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer_folder(tmp_path, tokenizer_config=None, config=None, generation=None):
    tmp_path.mkdir(exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([f"{a}+{b}={a + b}" for a in range(40) for b in range(40)], trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    for name, data in (("tokenizer_config", tokenizer_config), ("config", config), ("generation_config", generation)):
        if data is not None:
            (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_chat_template_and_ids(tmp_path):
    folder = _tokenizer_folder(
        tmp_path,
        tokenizer_config={"chat_template": CHATML, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        config={"eos_token_id": 0, "bos_token_id": None},
        generation={"eos_token_id": [2, 0]},
    )
    tok = load_tokenizer(folder)
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (2, None, 0)  # generation_config first, then config, then text
    assert tok.prompt_text("12+7=") == "<|im_start|>user\n12+7=<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode_prompt("12+7=")
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1  # <|im_start|> twice, <|im_end|> once
    assert tok.tokenizer.decode(ids, skip_special_tokens=False) == tok.prompt_text("12+7=")
    answer = tok.tokenizer.encode("19", add_special_tokens=False).ids
    assert tok.decode(answer + [2, 0, 0]) == "19"


def test_plain_prompt_without_template(tmp_path):
    folder = _tokenizer_folder(tmp_path, tokenizer_config={"bos_token": "<s>"}, config={"eos_token_id": 0})
    tok = load_tokenizer(folder)
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (0, 3, 0)
    assert tok.prompt_text("3+4=") == "3+4="
    assert tok.tokenizer.decode(tok.encode_prompt("3+4=")) == "3+4="


def test_template_gets_the_special_token_text(tmp_path):
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{{ eos_token }}"
    folder = _tokenizer_folder(tmp_path, {"chat_template": template}, {"eos_token_id": 2, "bos_token_id": 3})
    assert load_tokenizer(folder).prompt_text("x") == "<s>x<|im_end|>"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(RunFileError, match="tokenizer.json: missing"):
        load_tokenizer(tmp_path)
    folder = _tokenizer_folder(tmp_path / "a")
    with pytest.raises(ConfigError, match="no eos_token_id"):
        load_tokenizer(folder)
    failing = "{{ raise_exception('only user and assistant roles') }}"
    folder = _tokenizer_folder(tmp_path / "b", {"chat_template": failing}, {"eos_token_id": 0})
    with pytest.raises(ConfigError, match="chat_template: only user and assistant roles"):
        load_tokenizer(folder).prompt_text("x")
