"""Token-level losses over ragged completions: masks, the four aggregations (formula, length bias,
micro-batches), the KL estimators k1/k2/k3, clip-higher, the RLHF token reward and the
sequence-level baselines, each against NumPy written from the papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.grpo import (
    SEQUENCE_ADVANTAGES,
    equal_reward_groups,
    group_advantages,
    reinforce_advantages,
    rloo_advantages,
)
from ppo_jax.core.token_losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    clipped_surrogate_tokens,
    completion_mask,
    is_truncated,
    masked_whiten,
    token_rewards,
)

jax.config.update("jax_numpy_rank_promotion", "raise")

EOS = 9


def ragged(rng, lengths, width, eos=EOS):
    """Completions [B, width]: `lengths[b]` valid tokens, the last one EOS (or none when the
    length is `width` + 1, meaning truncated), garbage (not EOS) after."""
    rows = []
    for n in lengths:
        row = rng.integers(0, eos, size=width)
        if n <= width:
            row[n - 1] = eos
        rows.append(row)
    return np.array(rows)


def numpy_valid(completions, eos=EOS):
    """The mask written as a loop: tokens up to and including the first EOS."""
    mask = np.zeros(completions.shape)
    for b, row in enumerate(completions):
        for t, token in enumerate(row):
            mask[b, t] = 1
            if token == eos:
                break
    return mask


def numpy_aggregate(name, losses, mask):
    """The four modes written as in verl's and the papers' formulas, sequence by sequence."""
    per_seq = [losses[b][mask[b] > 0] for b in range(len(losses)) if mask[b].sum() > 0]
    if name == "token-mean":
        return np.concatenate(per_seq).sum() / sum(len(s) for s in per_seq)
    if name == "seq-mean-token-mean":
        return np.mean([s.mean() for s in per_seq])
    if name == "seq-mean-token-sum":
        return np.mean([s.sum() for s in per_seq])
    return np.mean([s.sum() for s in per_seq]) / losses.shape[1]


def test_completion_mask_and_truncation_against_a_loop():
    rng = np.random.default_rng(0)
    completions = ragged(rng, [1, 3, 6, 7, 2], 6)
    completions[4, 4] = EOS  # a second EOS after the first changes nothing
    mask = np.asarray(completion_mask(jnp.asarray(completions), EOS))
    np.testing.assert_array_equal(mask, numpy_valid(completions))
    np.testing.assert_array_equal(mask.sum(1), [1, 3, 6, 6, 2])
    np.testing.assert_array_equal(np.asarray(is_truncated(jnp.asarray(completions), EOS)), [0, 0, 0, 1, 0])


@pytest.mark.parametrize("name", list(AGGREGATIONS))
def test_aggregation_against_numpy_on_ragged_lengths(name):
    rng = np.random.default_rng(1)
    completions = ragged(rng, [1, 2, 5, 7, 4, 3], 6)
    mask = numpy_valid(completions)
    losses = rng.normal(size=mask.shape)
    got = aggregate(jnp.asarray(losses, jnp.float32), AGGREGATIONS[name](jnp.asarray(mask, jnp.float32)))
    assert float(got) == pytest.approx(numpy_aggregate(name, losses, mask), rel=1e-5)
    # Rows masked out entirely (skipped groups) count as absent, not as zero-loss sequences.
    mask[[1, 3]] = 0
    got = aggregate(jnp.asarray(losses, jnp.float32), AGGREGATIONS[name](jnp.asarray(mask, jnp.float32)))
    assert float(got) == pytest.approx(numpy_aggregate(name, losses, mask), rel=1e-5)


def test_length_bias_of_each_mode():
    # Token weight for a sequence of length n among B = 4 sequences of lengths 1, 2, 4, 8 (L = 8).
    lengths = np.array([1, 2, 4, 8])
    mask = jnp.asarray((np.arange(8)[None, :] < lengths[:, None]).astype(np.float32))
    weight = {name: np.asarray(fn(mask))[np.arange(4), 0] for name, fn in AGGREGATIONS.items()}
    np.testing.assert_allclose(weight["token-mean"], 1 / lengths.sum())  # the same for every token
    np.testing.assert_allclose(weight["seq-mean-token-mean"], 1 / (4 * lengths))  # short sequences weigh more
    np.testing.assert_allclose(weight["seq-mean-token-sum"], 1 / 4)
    np.testing.assert_allclose(weight["seq-mean-token-sum-norm"], 1 / (4 * 8))  # a constant
    # Each sequence's total weight: only seq-mean-token-mean gives every sequence the same share.
    totals = {name: np.asarray(fn(mask)).sum(1) for name, fn in AGGREGATIONS.items()}
    np.testing.assert_allclose(totals["seq-mean-token-mean"], 0.25)
    np.testing.assert_allclose(totals["token-mean"], lengths / lengths.sum())


@pytest.mark.parametrize("name", list(AGGREGATIONS))
def test_micro_batches_give_the_whole_batch_gradient(name):
    # A loss of parameters θ [L]: ℓ_{b,t} = (θ_t − x_{b,t})². Whole batch vs 3 micro-batches of 2
    # rows, each aggregated with its rows of the whole batch's weights: same loss, same gradient.
    rng = np.random.default_rng(2)
    mask = jnp.asarray(numpy_valid(ragged(rng, [1, 6, 3, 7, 2, 5], 6)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=6), jnp.float32)
    weights = AGGREGATIONS[name](mask)

    def loss(theta, x, w):
        return aggregate(jnp.square(theta[None, :] - x), w)

    whole_loss, whole_grad = jax.value_and_grad(loss)(theta, x, weights)
    parts = [jax.value_and_grad(loss)(theta, x[i : i + 2], weights[i : i + 2]) for i in (0, 2, 4)]
    assert float(sum(p[0] for p in parts)) == pytest.approx(float(whole_loss), rel=1e-5)
    np.testing.assert_allclose(sum(np.asarray(p[1]) for p in parts), np.asarray(whole_grad), rtol=1e-5, atol=1e-7)


def test_kl_estimators_against_their_formulas():
    rng = np.random.default_rng(3)
    lp, ref = rng.normal(size=20) - 2, rng.normal(size=20) - 2
    log_r = ref - lp
    expected = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": np.exp(log_r) - 1 - log_r}
    for name, fn in KL_ESTIMATORS.items():
        got = np.asarray(fn(jnp.asarray(lp, jnp.float32), jnp.asarray(ref, jnp.float32)))
        np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-6)


def test_kl_estimator_expectations_against_the_exact_kl():
    # Exact expectations over a ~ π_θ on a small categorical (every action weighted by π_θ(a)).
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5))
    for spread in (0.05, 1.0):
        q = p * np.exp(spread * rng.normal(size=5))
        q /= q.sum()
        exact = float(np.sum(p * np.log(p / q)))
        lp, ref = jnp.asarray(np.log(p), jnp.float32), jnp.asarray(np.log(q), jnp.float32)
        mean = {name: float(np.dot(p, np.asarray(fn(lp, ref)))) for name, fn in KL_ESTIMATORS.items()}
        assert mean["k1"] == pytest.approx(exact, rel=1e-4, abs=1e-7)  # unbiased
        assert mean["k3"] == pytest.approx(exact, rel=1e-4, abs=1e-7)  # unbiased
        assert mean["k2"] == pytest.approx(0.5 * float(np.sum(p * np.log(q / p) ** 2)), rel=1e-4)
        if spread < 0.1:  # k2 is biased, but agrees with KL to second order when q is close to p
            assert mean["k2"] == pytest.approx(exact, rel=0.1)
        assert np.all(np.asarray(KL_ESTIMATORS["k3"](lp, ref)) >= 0)


def test_clip_higher_against_numpy_and_zero_gradient_where_clipped():
    ratios = np.array([0.5, 0.85, 1.0, 1.15, 1.25, 1.5])
    lp = jnp.asarray(np.log(ratios), jnp.float32)[None, :]
    old = jnp.zeros_like(lp)
    for adv in (1.0, -1.0):
        a = jnp.full(lp.shape, adv)
        got = np.asarray(clipped_surrogate_tokens(lp, old, a, 0.2, 0.28))[0]
        np.testing.assert_allclose(got, -np.minimum(ratios * adv, np.clip(ratios, 0.8, 1.28) * adv), rtol=1e-6)
        grad = np.asarray(jax.grad(lambda x: jnp.sum(clipped_surrogate_tokens(x, old, a, 0.2, 0.28)))(lp))[0]
        clipped = ratios > 1.28 if adv > 0 else ratios < 0.8
        np.testing.assert_array_equal(grad[clipped], 0.0)
        assert np.all(grad[~clipped] != 0.0)
    # 1.25 is inside [0.8, 1.28]: clip-higher lets a positive advantage push it further.
    assert float(clipped_surrogate_tokens(lp, old, jnp.ones(lp.shape), 0.2, 0.2)[0, 4]) == pytest.approx(-1.2)


def test_token_rewards_place_the_delayed_reward_at_eos():
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], jnp.float32)
    kl = jnp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    got = np.asarray(token_rewards(jnp.array([2.0, -1.0, 5.0]), kl, mask, 0.1))
    expected = -0.1 * np.asarray(kl) * np.asarray(mask)
    expected[0, 2] += 2.0
    expected[1, 3] += -1.0
    expected[2, 0] += 5.0
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_masked_whiten_ignores_masked_tokens():
    x = jnp.asarray([[1.0, 2.0, 100.0], [3.0, -50.0, 7.0]])
    mask = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = np.asarray(masked_whiten(x, mask))
    valid = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(got[np.asarray(mask) > 0], (valid - valid.mean()) / valid.std(), rtol=1e-5)
    np.testing.assert_array_equal(got[np.asarray(mask) == 0], 0.0)


def test_sequence_baselines_against_numpy():
    rng = np.random.default_rng(5)
    rewards = rng.integers(0, 2, size=(4, 6)).astype(np.float32)
    rewards[2] = 1.0  # one group all equal
    r = jnp.asarray(rewards)
    g = rewards.shape[1]
    loo = np.array([[rewards[i, j] - np.delete(rewards[i], j).mean() for j in range(g)] for i in range(4)])
    np.testing.assert_allclose(np.asarray(rloo_advantages(r)), loo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(group_advantages(r, scale=False)), rewards - rewards.mean(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(reinforce_advantages(r)), rewards - rewards.mean(), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(equal_reward_groups(r)), np.all(rewards == rewards[:, :1], axis=1))
    for name, fn in SEQUENCE_ADVANTAGES.items():  # an all-equal group gets no signal, scaled or not
        if name != "reinforce":
            for scale in (True, False):
                np.testing.assert_allclose(np.asarray(fn(r, scale=scale))[2], 0.0, atol=1e-6)
    assert math.isclose(float(jnp.std(group_advantages(r)[0])), 1.0, rel_tol=1e-4)
