"""A task from the user's own data: a JSONL file of prompts and answers, the checkpoint's tokenizer
and a text reward (`rlhf.rewards`).

Each line is a JSON object; `prompt_field` and `answer_field` name its two fields. A prompt is
rendered with the checkpoint's chat template (`ChatTokenizer.encode_prompt`) and left-padded with
the pad id to the longest prompt P, so the batch is one array [B, P]; the decoder masks the
padding. A fraction `held_out` of the rows (by a hash of the prompt text, so the split is the
same whatever the line order) is kept for the before/after evaluation, the rest is for
supervised fine-tuning (`corpus`: the answer's tokens, then EOS, to `completion_len`) and RL.

The reward runs on the host: inside the compiled program `jax.pure_callback` decodes each
completion (up to its first EOS) and calls R(completion text, answer text) of the row whose
prompt tokens it continues (two rows with the same prompt share the first one's answer).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.rlhf import rewards
from ppo_jax.rlhf.tokenizer import ChatTokenizer, load_tokenizer


class JsonlData(NamedTuple):
    """The encoded rows of one split: prompt tokens [N, P] (left-padded), answer completions
    [N, L] (EOS-terminated), and the answer texts."""

    prompts: np.ndarray
    completions: np.ndarray
    answers: tuple[str, ...]


def read_rows(path: Path, prompt_field: str, answer_field: str) -> list[tuple[str, str]]:
    """(prompt, answer) of every non-empty line; `RunFileError` naming the line for a bad one."""
    if not path.is_file():
        raise RunFileError(path, "missing; --task jsonl:PATH needs a JSONL file of prompts and answers")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row[prompt_field]), str(row[answer_field])))
        except (json.JSONDecodeError, TypeError) as error:
            raise RunFileError(path, f"line {number} is not a JSON object ({error})") from None
        except KeyError as error:
            raise RunFileError(
                path, f"line {number} has no field {error.args[0]!r} (set --prompt-field / --answer-field)"
            ) from None
    if len(rows) < 2:
        raise RunFileError(path, f"needs at least 2 rows, has {len(rows)}")
    return rows


def is_held_out(prompt: str, fraction: float) -> bool:
    """A fixed pseudo-random split by the prompt text: a stable hash below `fraction`."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def _left_pad(rows: list[list[int]], width: int, pad: int) -> np.ndarray:
    return np.array([[pad] * (width - len(r)) + r for r in rows], np.int32).reshape(len(rows), width)


def _completion(ids: list[int], length: int, eos: int) -> list[int]:
    ids = ids[: length - 1] + [eos]
    return ids + [eos] * (length - len(ids))


@functools.cache
def load_splits(path: str, model: str, prompt_field: str, answer_field: str, completion_len: int, held_out: float):
    """(tokenizer, train JsonlData, held-out JsonlData) of a JSONL file, cached per arguments."""
    tokenizer = load_tokenizer(model)
    rows = read_rows(Path(path), prompt_field, answer_field)
    prompts = [tokenizer.encode_prompt(prompt) for prompt, _ in rows]
    width = max(len(p) for p in prompts)
    answers = [tokenizer.tokenizer.encode(answer, add_special_tokens=False).ids for _, answer in rows]
    splits = []
    for held in (False, True):
        index = [i for i, (prompt, _) in enumerate(rows) if is_held_out(prompt, held_out) == held]
        if not index:
            raise ConfigError("held_out", f"{path}: the {'held-out' if held else 'training'} split is empty")
        splits.append(
            JsonlData(
                _left_pad([prompts[i] for i in index], width, tokenizer.pad_id),
                np.array([_completion(answers[i], completion_len, tokenizer.eos_id) for i in index], np.int32),
                tuple(rows[i][1] for i in index),
            )
        )
    return tokenizer, splits[0], splits[1]


@functools.cache
def answer_table(*args) -> dict[bytes, str]:
    """Prompt tokens (int32 bytes) -> answer text over both splits of `load_splits(*args)` (the
    first row of a repeated prompt wins)."""
    table: dict[bytes, str] = {}
    for data in load_splits(*args)[1:]:
        for row, answer in zip(data.prompts.astype(np.int32), data.answers, strict=True):
            table.setdefault(row.tobytes(), answer)
    return table


@dataclasses.dataclass(frozen=True)
class JsonlTask:
    """The task protocol of `rlhf.setup` over a JSONL file (hashable by its settings)."""

    path: str
    model: str  # checkpoint folder holding the tokenizer
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    reward_name: str = "exact"
    completion_len: int = 16
    held_out: float = 0.2

    needs_reward_model = False
    name = "jsonl"

    def _splits(self) -> tuple[ChatTokenizer, JsonlData, JsonlData]:
        args = (self.path, self.model, self.prompt_field, self.answer_field, self.completion_len, self.held_out)
        return load_splits(*args)

    @property
    def tokenizer(self) -> ChatTokenizer:
        return self._splits()[0]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.tokenizer.get_vocab_size()

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def prompt_len(self) -> int:
        return self._splits()[1].prompts.shape[1]

    def _rows(self, key: jax.Array, num: int, held_out: bool) -> tuple[JsonlData, jax.Array]:
        data = self._splits()[1 + int(held_out)]
        return data, jax.random.randint(key, (num,), 0, data.prompts.shape[0])

    def prompts(self, key: jax.Array, num: int, held_out: bool = False) -> jax.Array:
        """`num` prompts [num, P] drawn uniformly (with replacement) from a split."""
        data, index = self._rows(key, num, held_out)
        return jnp.asarray(data.prompts)[index]

    def corpus(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """Supervised examples from the training split: (prompts [num, P], answers [num, L])."""
        data, index = self._rows(key, num, False)
        return jnp.asarray(data.prompts)[index], jnp.asarray(data.completions)[index]

    def reward(self, prompts: jax.Array, completions: jax.Array) -> jax.Array:
        """R(completion text, answer text) [B] float32, computed on the host."""
        shape = jax.ShapeDtypeStruct(completions.shape[:-1], jnp.float32)
        return jax.pure_callback(self._host_reward, shape, prompts, completions, vmap_method="expand_dims")

    def _host_reward(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        # JAX hands the callback jax.Arrays: NumPy before any indexing or iteration, which would
        # dispatch a computation from inside the running program (a deadlock on one CPU core)
        prompts, completions = np.asarray(prompts), np.asarray(completions)
        prompts = np.broadcast_to(prompts, completions.shape[:-1] + prompts.shape[-1:])
        answers, fn = self._answer_table(), rewards.resolve(self.reward_name)
        flat_p, flat_c = prompts.reshape(-1, prompts.shape[-1]), completions.reshape(-1, completions.shape[-1])
        out = [fn(self.tokenizer.decode(c), answers.get(p.tobytes(), "")) for p, c in zip(flat_p, flat_c, strict=True)]
        return np.asarray(out, np.float32).reshape(completions.shape[:-1])

    def _answer_table(self) -> dict[bytes, str]:
        args = (self.path, self.model, self.prompt_field, self.answer_field, self.completion_len, self.held_out)
        return answer_table(*args)

    def decode(self, tokens) -> str:
        """Text of a token row: leading padding dropped, up to the first EOS."""
        ids = [int(t) for t in tokens]
        start = next((i for i, t in enumerate(ids) if t != self.pad_id), len(ids))
        return self.tokenizer.decode(ids[start:])


def check_task(task: JsonlTask) -> None:
    """Fail early: the reward must resolve (a `ConfigError` otherwise)."""
    rewards.resolve(task.reward_name)
