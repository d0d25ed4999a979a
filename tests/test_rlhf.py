"""The preference task: the hidden rule, the GRU, the reward model and short PPO / GRPO runs.

References are independent: the hidden rule and the GRU are re-implemented in NumPy, the losses
are checked against hand-derived values. The learning tests share one reduced phase 1 (pretraining
and reward model, GRU) and run a short RL phase each.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.commands.rlhf import main
from ppo_jax.config import ConfigError
from ppo_jax.core.token_losses import completion_mask, kl_k1, token_rewards
from ppo_jax.errors import CheckpointError
from ppo_jax.rlhf import RLHFConfig, make_setup, pipeline, prepare, run_files, run_rlhf
from ppo_jax.rlhf.config import RLHyperparams
from ppo_jax.rlhf.lm import gru_lm
from ppo_jax.rlhf.model import TokenModel, hidden_states
from ppo_jax.rlhf.preference import PreferenceTask
from ppo_jax.rlhf.pretrain import bradley_terry_loss, preference_accuracy
from ppo_jax.rlhf.rollout import Rollout, group_targets, ppo_targets
from ppo_jax.rlhf.run_files import RESULT_NAME
from ppo_jax.rlhf.setup import sequence_score
from ppo_jax.rlhf.task import decode, generate_completions, make_corpus, preference_pairs, true_reward
from ppo_jax.runtime import compile_cache

jax.config.update("jax_numpy_rank_promotion", "raise")

# Reduced pipeline: each learning test runs in seconds on 2 CPU cores.
SMALL = dict(
    task="preference",
    model="gru",
    algo="ppo",
    pretrain_steps=300,
    pretrain_batch=128,
    rm_steps=300,
    rm_pairs=2048,
    rm_eval_pairs=512,
    rl_updates=15,
    rl_batch=128,
    rl_lr=1e-3,
    num_epochs=4,
    num_minibatches=4,
    eval_prompts=256,
)


def numpy_true_reward(prompts: np.ndarray, completions: np.ndarray, vocab: int) -> np.ndarray:
    """The hidden rule written as a loop: fraction of tokens that are the successor of the previous one."""
    out = np.zeros(len(prompts))
    for b, (x, y) in enumerate(zip(prompts, completions, strict=True)):
        previous, hits = int(x[-1]), 0
        for token in y:
            hits += int(token) == (previous + 1) % vocab
            previous = int(token)
        out[b] = hits / len(y)
    return out


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_hidden_states(params, tokens: np.ndarray) -> np.ndarray:
    """GRU of the model docstring in NumPy: r, z = σ(x_r + W_r h + b_r), σ(...); n = tanh(x_n + r ⊙ (W_n h + b_n))."""
    p = jax.tree.map(np.asarray, params["params"])
    emb, kernel, bias = p["input_gates"]["embedding"], p["hidden_gates"]["kernel"], p["hidden_gates"]["bias"]
    hidden = np.zeros((tokens.shape[0], kernel.shape[0]))
    out = []
    for t in range(tokens.shape[1]):
        x_r, x_z, x_n = np.split(emb[tokens[:, t]], 3, axis=-1)
        h_r, h_z, h_n = np.split(hidden @ kernel + bias, 3, axis=-1)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        hidden = (1 - z) * np.tanh(x_n + r * h_n) + z * hidden
        out.append(hidden)
    return np.stack(out, axis=1)


# --- task -----------------------------------------------------------------------------------


def test_true_reward_hand_examples():
    letters = "abcdefghijkl"
    enc = lambda s: [letters.index(c) for c in s]  # noqa: E731
    prompts = jnp.array([enc("xxxc".replace("x", "a")), enc("aaal"), enc("abcd"), enc("abcd")])
    completions = jnp.array([enc("defghijk"), enc("abcdefgh"), enc("aaaaaaaa"), enc("efgaaabc")])
    got = np.asarray(true_reward(prompts, completions, 12))
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 5 / 8])  # wraps from l to a; e,f,g and b,c count


def test_true_reward_against_numpy_loop():
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, 7, size=(64, 3))
    completions = rng.integers(0, 7, size=(64, 5))
    got = np.asarray(true_reward(jnp.asarray(prompts), jnp.asarray(completions), 7))
    np.testing.assert_allclose(got, numpy_true_reward(prompts, completions, 7), atol=1e-6)


def test_corpus_run_probability_sets_the_reward():
    corpus = jax.jit(make_corpus, static_argnums=1)(jax.random.key(0), 12, 1.0, 1.0)
    prompts = jax.random.randint(jax.random.key(1), (256, 4), 0, 12)
    generate = jax.jit(generate_completions, static_argnums=3)
    reward = jax.jit(true_reward, static_argnums=2)
    counting = generate(jax.random.key(2), corpus, prompts, 8)
    np.testing.assert_array_equal(np.asarray(reward(prompts, counting, 12)), 1.0)
    assert decode(counting[0]) == "".join("abcdefghijkl"[(int(prompts[0, -1]) + i) % 12] for i in range(1, 9))
    chain = generate(jax.random.key(2), corpus._replace(run_prob=jnp.float32(0.0)), prompts, 8)
    assert float(jnp.mean(reward(prompts, chain, 12))) < 0.5


def test_preference_labels_follow_the_hidden_rule():
    corpus = jax.jit(make_corpus, static_argnums=1)(jax.random.key(0), 12, 0.1, 1.0)
    pairs = jax.jit(preference_pairs, static_argnums=(2, 3, 4))(jax.random.key(3), corpus, 512, 4, 8)
    p, a, b = (np.asarray(x) for x in (pairs.prompts, pairs.first, pairs.second))
    ra, rb = numpy_true_reward(p, a, 12), numpy_true_reward(p, b, 12)
    expected = np.where(ra > rb, 1.0, np.where(ra < rb, 0.0, 0.5))
    np.testing.assert_array_equal(np.asarray(pairs.label), expected)
    assert 0.3 < np.mean(expected == 1.0) < 0.7  # both orders occur; pairs span the reward range


# --- model ----------------------------------------------------------------------------------


def test_gru_hidden_states_against_numpy():
    model = TokenModel(vocab_size=9, hidden_dim=16)
    params = gru_lm(model).init(jax.random.key(0))
    # Non-zero biases so that their placement is checked too.
    params = jax.tree.map(lambda x: x + 0.1, params)
    tokens = np.random.default_rng(0).integers(0, 9, size=(3, 6))
    got = np.asarray(hidden_states(model, params, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, numpy_hidden_states(params, tokens), rtol=1e-4, atol=1e-5)


def test_sampling_matches_teacher_forced_probabilities():
    # Through the `LanguageModel` record; EOS is an id the 5-token head never samples.
    lm = gru_lm(TokenModel(vocab_size=5, hidden_dim=16))
    params = jax.tree.map(lambda x: 3.0 * x, lm.init(jax.random.key(1)))  # sharper, more varied distributions
    n = 8000
    prompts = jnp.tile(jnp.array([[1, 3]]), (n, 1))
    sample = jax.jit(lambda p, x, key: lm.sample_fn(p, x, key, 2, 5))
    samples = np.asarray(sample(params, prompts, jax.random.key(2)))
    # Teacher-forced logits of completion tokens 0 and 1: positions P − 1 and P of prompt + y_0.
    logits_of = jax.jit(lambda p, c: lm.logits_fn(params, jnp.concatenate([p, c[:, :1]], axis=1))[0, 1:])
    logits = logits_of(prompts[:1], jnp.asarray(samples[:1]))
    first = np.asarray(jax.nn.softmax(logits[0]))
    freq = np.bincount(samples[:, 0], minlength=5) / n
    np.testing.assert_allclose(freq, first, atol=4 * math.sqrt(0.25 / n))
    # Second token given the first: compare on the most frequent first token.
    y0 = int(np.argmax(freq))
    rows = samples[samples[:, 0] == y0]
    cond = logits_of(prompts[:1], jnp.array([[y0, 0]]))[1]
    freq1 = np.bincount(rows[:, 1], minlength=5) / len(rows)
    np.testing.assert_allclose(freq1, np.asarray(jax.nn.softmax(cond)), atol=4 * math.sqrt(0.25 / len(rows)))


# --- losses of the pipeline -----------------------------------------------------------------


def test_bradley_terry_hand_values_and_gradient():
    assert float(bradley_terry_loss(jnp.array([0.0]), jnp.array([0.0]), jnp.array([1.0]))) == pytest.approx(
        math.log(2.0)
    )
    # σ(ln 3) = 3/4: −ln(3/4) when the first is preferred, −ln(1/4) when the second is.
    first, second = jnp.array([math.log(3.0), math.log(3.0)]), jnp.array([0.0, 0.0])
    got = bradley_terry_loss(first, second, jnp.array([1.0, 0.0]))
    assert float(got) == pytest.approx((math.log(4 / 3) + math.log(4.0)) / 2, rel=1e-6)
    g = np.asarray(jax.grad(bradley_terry_loss)(jnp.zeros(2), jnp.zeros(2), jnp.array([1.0, 0.0])))
    np.testing.assert_allclose(g, [-0.25, 0.25])  # raise the preferred, lower the other


def test_preference_accuracy_hand_value():
    first = jnp.array([1.0, 0.0, 2.0, 5.0])
    second = jnp.array([0.0, 1.0, 3.0, 0.0])
    label = jnp.array([1.0, 0.0, 1.0, 0.5])  # right, right, wrong, tie (ignored)
    assert float(preference_accuracy(first, second, label)) == pytest.approx(2 / 3)


def test_token_rewards_kl_per_token_and_delayed_score():
    log_prob = jnp.log(jnp.array([[0.5, 0.5, 0.5]]))
    ref = jnp.log(jnp.array([[0.25, 0.5, 1.0]]))
    got = np.asarray(token_rewards(jnp.array([2.0]), kl_k1(log_prob, ref), jnp.ones((1, 3)), 0.1))
    np.testing.assert_allclose(got, [[-0.1 * math.log(2), 0.0, 0.1 * math.log(2) + 2.0]], rtol=1e-6)


def _rollout(reward, values, mask=None):
    b, length = values.shape
    zeros = jnp.zeros((b, length))
    ints = jnp.zeros((b, length), jnp.int32)
    mask = jnp.ones((b, length)) if mask is None else mask
    false = jnp.zeros(b, bool)
    return Rollout(ints, ints, mask, zeros, zeros, values * mask, zeros, reward, jnp.zeros(b), jnp.zeros(b), false)


def _hp(config: RLHFConfig) -> RLHyperparams:
    return config.rl_hyperparams()


def test_ppo_targets_returns_are_the_delayed_reward():
    # With log π = log π_ref the only reward is the score at the last token; γ = λ = 1 makes the
    # return of every token the score and the advantage score − V(s_i).
    config = RLHFConfig(algo="ppo", gamma=1.0, gae_lambda=1.0)
    values = jnp.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    rollout = _rollout(jnp.array([1.0, -2.0]), values)
    adv, ret = ppo_targets(_hp(config), 0.1, rollout, jnp.zeros((2, 3)))
    np.testing.assert_allclose(np.asarray(ret), [[1.0] * 3, [-2.0] * 3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adv), [[0.9, 0.8, 0.7], [-3.0, -1.0, -2.5]], rtol=1e-6)
    # λ = 0: one-step TD errors, V(s_{i+1}) − V(s_i) inside, score − V at the end.
    lam0 = config.replace(gae_lambda=0.0)
    adv, _ = ppo_targets(_hp(lam0), 0.1, rollout, jnp.zeros((2, 3)))
    np.testing.assert_allclose(np.asarray(adv), [[0.1, 0.1, 0.7], [-2.0, 1.5, -2.5]], rtol=1e-6)


def test_ppo_targets_end_at_eos():
    # Row 0 ends at token 1 (its EOS): the reward arrives there, nothing after it is bootstrapped
    # or counted, and the values after EOS (garbage) change nothing.
    config = RLHFConfig(algo="ppo", gamma=1.0, gae_lambda=1.0)
    mask = jnp.array([[1.0, 1.0, 0.0, 0.0]])
    kl = jnp.array([[0.5, 0.25, 9.0, 9.0]]) * mask
    for garbage in (0.0, 100.0):
        values = jnp.array([[0.1, 0.2, garbage, garbage]])
        rollout = _rollout(jnp.array([1.0]), values, mask)._replace(values=values)
        adv, ret = ppo_targets(_hp(config), 0.2, rollout, kl)
        # rewards −0.1, 1 − 0.05 = 0.95: returns 0.85, 0.95
        np.testing.assert_allclose(np.asarray(ret), [[0.85, 0.95, 0.0, 0.0]], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(adv), [[0.75, 0.75, 0.0, 0.0]], rtol=1e-6)


def test_group_targets_group_consecutive_rows_and_skip_equal_groups():
    config = RLHFConfig(algo="grpo", group_size=4, rl_batch=8)
    setup = make_setup(config)
    reward = jnp.array([1.0, 2.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0])
    adv, keep = group_targets(setup, 0.0, _rollout(reward, jnp.zeros((8, 2))), jnp.zeros((8, 2)))
    s = np.std([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(np.asarray(adv)[:4, 0], (np.array([1, 2, 3, 4]) - 2.5) / s, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(adv)[4:], 0.0)
    np.testing.assert_array_equal(np.asarray(keep), 1.0)
    skip = make_setup(config.replace(skip_equal_groups=True))
    _, keep = group_targets(skip, 0.0, _rollout(reward, jnp.zeros((8, 2))), jnp.zeros((8, 2)))
    np.testing.assert_array_equal(np.asarray(keep), [1.0] * 4 + [0.0] * 4)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("algo", "dpo"),
        ("vocab_size", 2),
        ("vocab_size", 27),
        ("completion_len", 0),
        ("rl_batch", 1.5),
        ("kl_coef", -0.1),
        ("gamma", 1.5),
        ("corpus_run_prob", 2.0),
        ("rl_lr", 0.0),
        ("clip_eps_low", float("nan")),
        ("clip_eps_high", -0.1),
        ("num_minibatches", 3),
        ("clip_value_loss", "yes"),
        ("num_samples", 1000),
        ("task", "chess"),
        ("model", "lstm"),
        ("positions", "alibi"),
        ("kl_estimator", "k4"),
        ("kl_penalty", "both"),
        ("loss_aggregation", "seq-sum"),
        ("truncated_completions", "drop"),
        ("scale_advantages", "no"),
        ("digits", 5),
        ("num_heads", 5),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        RLHFConfig(**{field: value})
    assert err.value.field == field


def test_grpo_group_must_divide_the_batch():
    with pytest.raises(ConfigError) as err:
        RLHFConfig(algo="grpo", rl_batch=100, group_size=8, num_minibatches=4)
    assert err.value.field == "group_size"
    with pytest.raises(ConfigError) as err:
        RLHFConfig(algo="grpo", group_size=1)
    assert err.value.field == "group_size"
    RLHFConfig(algo="ppo", rl_batch=100, group_size=8, num_minibatches=4)  # ppo ignores groups
    with pytest.raises(ConfigError) as err:
        RLHFConfig(algo="ppo", skip_equal_groups=True)
    assert err.value.field == "skip_equal_groups"


def test_cli_rejects_bad_setting_before_running(tmp_path, capsys, no_compiles):
    with no_compiles():
        assert main(["--algo", "ppo", "--kl-coef", "-1", "--out", str(tmp_path)]) == 2
        assert "kl_coef" in capsys.readouterr().err
        assert main(["--compare", "grpo,dpo", "--out", str(tmp_path)]) == 2
        assert "dpo" in capsys.readouterr().err
    assert not (tmp_path / RESULT_NAME).exists()


def test_cli_refuses_a_folder_that_holds_a_run(tmp_path, capsys, no_compiles):
    (tmp_path / "rlhf.json").write_text("{}")
    with no_compiles():
        assert main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--out" in err and "Traceback" not in err


# --- learning -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phase1():
    return prepare(RLHFConfig(**SMALL))


def numpy_hidden_rule(prompts: np.ndarray, completions: np.ndarray, task: PreferenceTask) -> np.ndarray:
    """The generalised rule as a loop: successor hits among the tokens before EOS, over L."""
    out = np.zeros(len(prompts))
    for b, (x, y) in enumerate(zip(prompts, completions, strict=True)):
        previous, hits = int(x[-1]), 0
        for token in y:
            if token == task.eos_id:
                break
            hits += int(token) == (previous + 1) % task.letters
            previous = int(token)
        out[b] = hits / task.completion_len
    return out


def test_hidden_rule_with_eos_against_numpy():
    task = PreferenceTask(letters=7, prompt_len=3, completion_len=6)
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, 7, size=(64, 3))
    completions = rng.integers(0, 8, size=(64, 6))  # 7 is EOS
    completions = np.where(np.cumsum(completions == 7, axis=1) > 0, 7, completions)
    got = np.asarray(task.reward(jnp.asarray(prompts), jnp.asarray(completions)))
    np.testing.assert_allclose(got, numpy_hidden_rule(prompts, completions, task), atol=1e-6)
    assert task.decode([0, 1, 7, 7]) == "ab."


def test_reward_model_beats_chance_on_held_out_pairs(phase1):
    setup = make_setup(phase1.config)
    task = setup.task
    assert float(phase1.reward_model.eval_accuracy) > 0.8
    # Fresh pairs, labels and accuracy computed independently in NumPy.
    pairs = jax.jit(task.preference_pairs, static_argnums=1)(jax.random.key(7), 1024)

    @jax.jit
    def score(params, prompts, completions):
        mask = completion_mask(completions, task.eos_id)
        return sequence_score(setup.reward_model, params, prompts, completions, mask)

    scores = [np.asarray(score(phase1.frozen.reward, pairs.prompts, c)) for c in (pairs.first, pairs.second)]
    p = np.asarray(pairs.prompts)
    r1 = numpy_hidden_rule(p, np.asarray(pairs.first), task)
    r2 = numpy_hidden_rule(p, np.asarray(pairs.second), task)
    decided = r1 != r2
    accuracy = np.mean((scores[0] > scores[1])[decided] == (r1 > r2)[decided])
    assert accuracy > 0.8


def test_pretrained_policy_imitates_the_corpus(phase1):
    setup = make_setup(phase1.config)
    task = setup.task
    prompts, corpus = jax.jit(task.corpus, static_argnums=1)(jax.random.key(5), 2048)
    sample = jax.jit(setup.policy.sample_fn, static_argnums=(3, 4))
    sampled = sample(phase1.frozen.reference, prompts, jax.random.key(6), 8, task.eos_id)
    p = np.asarray(prompts)
    model_reward = numpy_hidden_rule(p, np.asarray(sampled), task).mean()
    corpus_reward = numpy_hidden_rule(p, np.asarray(corpus), task).mean()
    assert abs(model_reward - corpus_reward) < 0.03 and model_reward < 0.3
    lengths = [np.asarray(completion_mask(c, task.eos_id)).sum(1).mean() for c in (sampled, corpus)]
    assert abs(lengths[0] - lengths[1]) < 0.3  # it learned where the corpus ends
    loss = phase1.pretrain.history["loss"]
    assert loss[-1] < loss[0] - 0.2  # from ln V toward the corpus entropy


@pytest.fixture(scope="module")
def rl_run(phase1):
    """Short RL runs on the shared phase 1, cached by (algo, kl_coef)."""
    cache = {}

    def run(algo: str, kl_coef: float):
        if (algo, kl_coef) not in cache:
            config = RLHFConfig(**{**SMALL, "algo": algo, "kl_coef": kl_coef})
            cache[algo, kl_coef] = run_rlhf(config, phase1=phase1)
        return cache[algo, kl_coef]

    return run


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_short_rl_run_raises_true_reward_with_bounded_kl(rl_run, algo):
    result = rl_run(algo, RLHFConfig().kl_coef)
    config = result.config
    s = result.summary
    assert s["true_reward_after"] > s["true_reward_before"] + 0.15
    assert s["learned_reward_after"] > s["learned_reward_before"] + 1.0
    # Bounded: KL stays finite and below that of a deterministic policy against a uniform reference.
    bound = config.completion_len * math.log(config.vocab_size)
    kl = result.history["kl"][:, 0]  # [updates, seeds]
    assert np.all(np.isfinite(kl)) and kl.max() < bound and 0.0 < s["kl_to_reference"] < bound
    assert kl[0] < 0.05  # the first batch is sampled from the reference policy itself
    # Same prompts before and after; the report has the requested number of samples.
    assert [r["prompt"] for r in result.samples_before] == [r["prompt"] for r in result.samples_after]
    assert len(result.samples_after) == config.num_samples


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_stronger_kl_coef_keeps_the_policy_closer(rl_run, algo):
    # PPO pays β·KL in the per-token reward, GRPO in the loss: either way a larger β must
    # give a smaller KL to the reference over the whole run.
    weak, strong = rl_run(algo, RLHFConfig().kl_coef), rl_run(algo, 1.0)
    assert strong.history["kl"][5:].mean() < 0.6 * weak.history["kl"][5:].mean()
    assert strong.summary["kl_to_reference"] < weak.summary["kl_to_reference"]


def test_phase1_must_match_the_config(phase1):
    with pytest.raises(ConfigError) as err:
        run_rlhf(RLHFConfig(**{**SMALL, "hidden_dim": 32}), phase1=phase1)
    assert err.value.field == "hidden_dim"


def test_cli_writes_the_run_folder(rl_run, tmp_path, monkeypatch, capsys):
    # The pipeline itself is tested above; here a finished run stands in for it (no recompile).
    result = rl_run("grpo", RLHFConfig().kl_coef)
    seen = {}

    def fake_run(config, callback=None, seeds=1, options=None):
        seen["config"], seen["seeds"] = config, seeds
        callback("pretrain", 100, {"loss": np.float32(2.0)})
        callback("rl", config.rl_updates, {"true_reward": np.float32(0.5), "kl": np.float32(1.0)})
        return result

    monkeypatch.setattr(pipeline, "run_rlhf", fake_run)
    enabled = []  # the persistent compilation cache: on by default, off with --no-compile-cache
    monkeypatch.setattr(compile_cache, "enable", lambda path=None: enabled.append(path))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    out_dir = tmp_path / "run"
    assert main([*flags, "--algo", "grpo", "--out", str(out_dir)]) == 0
    assert seen["config"] == result.config and enabled == [None]
    out = capsys.readouterr().out
    assert "[pretrain   100/300]  loss 2.0000" in out and "[grpo   15/15]  true_reward 0.5000  kl 1.0000" in out
    doc = json.loads((out_dir / RESULT_NAME).read_text())
    for key in ("true_reward_before", "true_reward_after", "reward_model_accuracy", "kl_to_reference"):
        assert doc[key] == result.summary[key]
    assert isinstance(doc["compile_cache_hit"], bool) and "compile_cache_dir" in doc
    assert doc["algo"] == "grpo" and set(doc["wall_seconds"]) >= {"pretrain", "reward_model", "rl", "total"}
    assert doc["samples_before"] == result.samples_before and doc["samples_after"] == result.samples_after
    config = json.loads((out_dir / "config.json").read_text())
    assert config["rl_batch"] == SMALL["rl_batch"] and config["task"] == "preference"
    rows = (out_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 1 + SMALL["rl_updates"] and {"kl", "true_reward", "entropy", "length"} <= set(header)
    kl = [float(r.split(",")[header.index("kl")]) for r in rows[1:]]
    assert kl == pytest.approx(result.history["kl"][:, 0].tolist(), rel=1e-5, abs=1e-6)
    assert (out_dir / "rlhf.png").stat().st_size > 10_000
    # The fine-tuned policy loads back and samples what the in-memory parameters sample.
    loaded = run_files.load_policy(out_dir)
    setup = make_setup(result.config)
    prompts = jax.jit(setup.task.prompts, static_argnums=1)(jax.random.key(3), 16)
    sample = jax.jit(setup.policy.sample_fn, static_argnums=(3, 4))
    again = sample(loaded.params, prompts, jax.random.key(4), 8, setup.task.eos_id)
    same = sample(result.params.policy, prompts, jax.random.key(4), 8, setup.task.eos_id)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(same))
    assert len(run_files.sample_text(loaded, prompts[:2], jax.random.key(4))) == 2
    # The folder now holds a run: a second run into it is refused.
    assert main([*flags, "--out", str(out_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # --overwrite replaces it; a file of the user's in the folder stays.
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / "metrics.csv").write_text("stale")
    assert main([*flags, "--overwrite", "--no-compile-cache", "--out", str(out_dir)]) == 0
    assert enabled == [None] and (out_dir / "notes.txt").read_text() == "mine"
    assert (out_dir / "metrics.csv").read_text().splitlines()[0].split(",") == header
    assert main([*flags, "--seeds", "0", "--out", str(tmp_path / "other")]) == 2
    assert "seeds" in capsys.readouterr().err


def test_overwrite_deletes_a_run_and_its_variant_folders_only(tmp_path):
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / RESULT_NAME).write_text("{}")
    (tmp_path / "ppo").mkdir()  # a folder named like a variant, holding no run
    (tmp_path / "ppo" / "mine.txt").write_text("mine")
    (tmp_path / "compare.png").write_bytes(b"png")
    with pytest.raises(ConfigError, match="already holds a run .grpo.; replace it with --overwrite"):
        run_files.claim_run_dir(tmp_path, variants=("grpo", "ppo"))
    run_files.claim_run_dir(tmp_path, overwrite=True, variants=("grpo", "ppo"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ppo"] and (tmp_path / "ppo" / "mine.txt").exists()
    run_files.claim_run_dir(tmp_path / "new")  # a folder that does not exist yet is free


def test_load_policy_names_a_broken_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        run_files.load_policy(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(RLHFConfig(**SMALL).to_dict()))
    (tmp_path / "policy.msgpack").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="policy.msgpack"):
        run_files.load_policy(tmp_path)


def test_cli_compare_writes_a_table_and_each_variant(rl_run, tmp_path, monkeypatch, capsys):
    from ppo_jax.rlhf import variants

    results = {"grpo": rl_run("grpo", RLHFConfig().kl_coef), "ppo": rl_run("ppo", RLHFConfig().kl_coef)}
    seen = {}

    def fake_compare(base, names, callback=None, on_result=None, seeds=1):
        seen["names"], seen["seeds"] = list(names), seeds
        for name, result in results.items():
            on_result(name, result)
        return results

    monkeypatch.setattr(variants, "run_compare", fake_compare)
    monkeypatch.setattr(compile_cache, "enable", lambda path=None: None)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main([*flags, "--compare", "grpo,ppo", "--seeds", "2", "--quiet", "--out", str(tmp_path)]) == 0
    assert seen == {"names": ["grpo", "ppo"], "seeds": 2}
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["variant", "true_reward"] and table[1].split()[0] == "grpo"
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert doc["variants"]["ppo"]["kl_to_reference"] == results["ppo"].summary["kl_to_reference"]
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert (tmp_path / "grpo" / RESULT_NAME).exists() and (tmp_path / "ppo" / "policy.msgpack").exists()
    # The folder holds a comparison now: a single run into it is refused.
    assert main([*flags, "--quiet", "--out", str(tmp_path)]) == 2
    assert "compare.json" in capsys.readouterr().err
