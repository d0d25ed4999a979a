"""The tokenizer of a Hugging Face checkpoint folder: `tokenizer.json` through the `tokenizers`
package, the special ids of the checkpoint, and its chat template.

Special ids, first found wins (a list takes its first entry):

    EOS: generation_config.json eos_token_id, config.json eos_token_id, tokenizer_config.json eos_token
    BOS: the same three files' bos_token_id / bos_token (None when no file names one)
    pad: the same three files' pad_token_id / pad_token, else EOS

The prompt of a user text is the checkpoint's `chat_template` (tokenizer_config.json) rendered
with one user message and `add_generation_prompt=True`, as `transformers` renders it (Jinja2 in a
sandbox, `trim_blocks`, `lstrip_blocks`); the template writes its own special tokens, so the
rendered text is encoded without adding any. Without a template the prompt is the text itself,
encoded with the tokenizer's own special tokens (its post-processor, e.g. a BOS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from ppo_jax.errors import ConfigError, RunFileError

TOKENIZER_FILE = "tokenizer.json"


class ChatTokenizer(NamedTuple):
    """A `tokenizers.Tokenizer` with the checkpoint's special ids and chat template."""

    tokenizer: Any  # tokenizers.Tokenizer
    eos_id: int
    bos_id: int | None
    pad_id: int
    chat_template: str | None
    special_tokens: dict[str, str]  # bos_token / eos_token / pad_token text, for the template

    def prompt_text(self, text: str) -> str:
        """The text the model sees for one user message (the chat template, or the text itself)."""
        if self.chat_template is None:
            return text
        return render_chat(self.chat_template, [{"role": "user", "content": text}], self.special_tokens)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of `prompt_text(text)`."""
        special = self.chat_template is None
        return self.tokenizer.encode(self.prompt_text(text), add_special_tokens=special).ids

    def decode(self, ids) -> str:
        """Text of ids up to (not including) the first EOS, special tokens dropped."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _raise(message: str):
    raise ConfigError("chat_template", message)


def render_chat(template: str, messages: list[dict[str, str]], special_tokens: dict[str, str]) -> str:
    """Render a chat template for `messages` with a generation prompt (Jinja2, sandboxed)."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError("chat_template", "rendering it needs jinja2: pip install 'ppo_jax[lm]'") from None
    from jinja2 import TemplateError

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True, **special_tokens)
    except TemplateError as error:
        raise ConfigError("chat_template", f"cannot be rendered ({error})") from None


def _optional_json(path: Path) -> dict:
    return read_json_object(path) if path.is_file() else {}


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`; `RunFileError` naming the file when it is not readable JSON or
    not an object (a checkpoint folder's config, tokenizer and generation files)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFileError(path, f"not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunFileError(path, "is not a JSON object")
    return data


def _token_text(value) -> str | None:
    """A tokenizer_config.json token entry: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _special_id(name: str, files: list[dict], tokenizer_config: dict, tokenizer) -> int | None:
    for data in files:
        value = data.get(f"{name}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    text = _token_text(tokenizer_config.get(f"{name}_token"))
    return None if text is None else tokenizer.token_to_id(text)


def load_tokenizer(folder) -> ChatTokenizer:
    """The tokenizer of a checkpoint folder. Raises `RunFileError` for a missing or unreadable
    tokenizer.json and `ConfigError` when no EOS id can be found."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(
            "model", "Hugging Face tokenizers need the tokenizers package: pip install 'ppo_jax[lm]'"
        ) from None
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise RunFileError(path, "missing; a Hugging Face checkpoint used for text needs its tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a bad file
        raise RunFileError(path, f"not a readable tokenizer ({error})") from None
    tokenizer_config = _optional_json(folder / "tokenizer_config.json")
    files = [_optional_json(folder / "generation_config.json"), _optional_json(folder / "config.json")]
    eos = _special_id("eos", files, tokenizer_config, tokenizer)
    if eos is None:
        raise ConfigError(
            "model", f"{folder}: no eos_token_id in generation_config.json, config.json or tokenizer_config.json"
        )
    bos = _special_id("bos", files, tokenizer_config, tokenizer)
    pad = _special_id("pad", files, tokenizer_config, tokenizer)
    special = {
        f"{name}_token": tokenizer.id_to_token(token) or ""
        for name, token in (("bos", bos), ("eos", eos), ("pad", pad))
        if token is not None
    }
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return ChatTokenizer(tokenizer, eos, bos, eos if pad is None else pad, template or None, special)
