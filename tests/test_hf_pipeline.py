"""`--model hf:PATH --task jsonl:PATH` end to end on a tiny random Qwen2 checkpoint, and the text
rewards against hand-worked cases."""

from __future__ import annotations

import importlib.util
import json
import threading

import jax
import numpy as np
import pytest
from decoder_reference import CONFIGS, random_weights, write_checkpoint, write_tokenizer

from ppo_jax.commands.rlhf import main
from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.rlhf import RLHFConfig, make_setup, run_files, run_rlhf
from ppo_jax.rlhf.rewards import final_number, format_reward, numeric, resolve

TEMPLATE = "{% for m in messages %}Q:{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"


def first_digit_reward(completion: str, answer: str) -> float:
    """A user reward for `module:function`: 1 when the first character matches."""
    return float(completion[:1] == answer[:1])


def test_final_number_and_rewards():
    assert final_number("so 3 + 4 = 7\n#### 1,234") == 1234.0
    assert final_number("the answer is \\boxed{\\frac{1}{2}} or \\boxed{-3.5}") == -3.5
    assert final_number("first 12 then 15.") == 15.0
    assert final_number("no digits") is None
    assert numeric("It is #### 72", "Natalia sold 48/2 = 24 clips ... #### 72") == 1.0
    assert numeric("It is 71", "#### 72") == 0.0
    assert (format_reward("#### 5", ""), format_reward("\\boxed{x}", ""), format_reward("5", "")) == (1.0, 1.0, 0.0)
    assert resolve("test_hf_pipeline:first_digit_reward")("42", "4") == 1.0
    with pytest.raises(ConfigError, match="reward: must be one of exact, numeric, format, math or module:function"):
        resolve("fuzzy")
    with pytest.raises(ConfigError, match="reward: cannot import 'no_such_module:f'"):
        resolve("no_such_module:f")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    rows = [{"question": f"{a}+{b}=", "result": str(a + b)} for a in range(10) for b in range(10)]
    data = root / "sums.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model = root / "model"
    vocab = write_tokenizer(model, [r["question"] + r["result"] for r in rows] + ["QA: "], TEMPLATE)
    raw = CONFIGS["qwen2-tied"] | {"vocab_size": vocab, "eos_token_id": 0}
    write_checkpoint(model, raw, random_weights(raw, 0))
    return model, data


def _config(model, data, **changes):
    settings = dict(
        model=f"hf:{model}",
        task=f"jsonl:{data}",
        prompt_field="question",
        answer_field="result",
        completion_len=4,
        pretrain_steps=4,
        pretrain_batch=8,
        rl_updates=2,
        rl_batch=8,
        group_size=4,
        num_epochs=1,
        num_minibatches=1,
        eval_prompts=8,
        num_samples=2,
    )
    return RLHFConfig(**(settings | changes))


def test_math_reward_compares_values_on_a_thread(monkeypatch):
    """`math`: equal values in other notations score 1 (hand-picked pairs), other values 0; it runs
    off the main thread, where the reward callback runs (math-verify's default timeouts would not)."""
    pairs = [
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("so it is $0.50$", "1/2", 1.0),
        ("#### 72", "72", 1.0),
        ("\\boxed{3}", "4", 0.0),
        ("the set $\\{1, 2\\}$", "$\\{2, 1\\}$", 1.0),
        ("no answer", "7", 0.0),
    ]
    fn, results = resolve("math"), []
    worker = threading.Thread(target=lambda: results.extend(fn(c, a) for c, a, _ in pairs))
    worker.start()
    worker.join()
    assert results == [want for _, _, want in pairs]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # not installed
    with pytest.raises(ConfigError, match=r"reward: math needs math-verify: pip install 'ppo_jax\[math\]'"):
        resolve("math")


def test_jsonl_task_prompts_rewards_and_split(folders):
    model, data = folders
    task = make_setup(_config(model, data)).task
    prompts = np.asarray(task.prompts(jax.random.key(0), 6))
    assert all(task.decode(p).startswith("Q:") and task.decode(p).endswith(" A:") for p in prompts)
    held = {task.decode(p) for p in np.asarray(task.prompts(jax.random.key(1), 200, held_out=True))}
    train = {task.decode(p) for p in np.asarray(task.prompts(jax.random.key(2), 200))}
    assert held and not held & train
    _, answers = task.corpus(jax.random.key(3), 5)
    assert np.asarray(task.reward(task.corpus(jax.random.key(3), 5)[0], answers)).tolist() == [1.0] * 5
    wrong = np.asarray(answers).copy()
    wrong[:, 0] = np.where(wrong[:, 0] == 2, 3, 2)  # another digit first
    assert np.asarray(task.reward(task.corpus(jax.random.key(3), 5)[0], wrong)).tolist() == [0.0] * 5


class HostOnly:
    """An array the host can read (`__array__`) and nothing else: JAX hands a pure_callback
    jax.Arrays, whose indexing or iteration would run a computation from inside the calling
    program (seen as a hang of a jsonl RL run on one CPU core)."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def __array__(self, dtype=None, copy=None):
        return self.array


def test_host_reward_reads_its_inputs_as_numpy_only(folders):
    model, data = folders
    task = make_setup(_config(model, data)).task
    prompts, answers = task.corpus(jax.random.key(3), 5)
    reward = task._host_reward(HostOnly(prompts), HostOnly(answers))
    assert reward.tolist() == [1.0] * 5


def test_lora_run_writes_a_loadable_folder(folders, tmp_path):
    """SFT, then GRPO on adapters: the base weights stay the reference's, the adapters train, and
    the run folder records the model by reference and loads back."""
    model, data = folders
    result = run_rlhf(_config(model, data, lora_rank=2))
    assert set(result.summary) >= {"accuracy_before", "accuracy_after"}
    base = result.frozen.reference["params"]
    assert "lora" not in result.frozen.reference  # the reference is the base alone
    after = {k: v for k, v in result.params.policy["params"].items() if k != "value_head"}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), {k: base[k] for k in after}, after)
    moved = [float(np.abs(np.asarray(b)).max()) for b in jax.tree.leaves(result.params.policy["lora"])]
    assert min(moved) > 0  # every A and B trained
    run_files.write_run(tmp_path / "run", result)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == f"hf:{model}" and saved["task"] == f"jsonl:{data}"
    loaded = run_files.load_policy(tmp_path / "run")
    leaves = zip(jax.tree.leaves(loaded.params), jax.tree.leaves(result.params.policy), strict=True)
    assert all(np.array_equal(a, b) for a, b in leaves)


def test_cli_errors_are_one_line(folders, tmp_path, capsys):
    model, data = folders
    assert main(["--model", f"hf:{tmp_path}", "--task", f"jsonl:{data}", "--out", str(tmp_path / "o")]) == 1
    assert "tokenizer.json: missing" in capsys.readouterr().err
    assert main(["--task", f"jsonl:{data}", "--out", str(tmp_path / "o")]) == 2
    assert "needs --model hf:PATH" in capsys.readouterr().err
    with pytest.raises(RunFileError, match="line 1 has no field 'prompt'"):
        make_setup(_config(model, data, prompt_field="prompt", answer_field="result", reward="numeric"))


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"model": "hf:"}, "model"),
        ({"model": "llama"}, "model"),
        ({"task": "jsonl:data.jsonl"}, "task"),
        ({"task": "csv:data.csv"}, "task"),
        ({"lora_rank": 4}, "lora_rank"),
        ({"lora_rank": -1}, "lora_rank"),
        ({"lora_alpha": 0.0}, "lora_alpha"),
        ({"held_out": 0.0}, "held_out"),
        ({"model_dtype": "float16"}, "model_dtype"),
        ({"pretrain_steps": -1}, "pretrain_steps"),
    ],
)
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(ConfigError) as error:
        RLHFConfig(**changes)
    assert error.value.field == field
