"""GSPO, CISPO and REINFORCE++ on ragged batches (variable lengths, EOS masking), each against NumPy
written from its paper's formula; their selection from the config and the command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.policy_losses import POLICY_LOSSES, reinforce_pp_advantages
from ppo_jax.core.token_losses import AGGREGATIONS, aggregate, completion_mask, masked_values
from ppo_jax.errors import ConfigError
from ppo_jax.rlhf import RLHFConfig
from ppo_jax.rlhf.variants import VARIANTS, variant_configs

jax.config.update("jax_numpy_rank_promotion", "raise")

EOS = 9
LENGTHS = [1, 3, 6, 2, 5, 7]  # 7 > width: truncated (no EOS)
WIDTH = 6


def ragged(seed):
    """A ragged batch: mask [B, L] from completions with EOS at the given lengths, log-probs of
    the new and old policy (0 after EOS, as the trainer passes them), sequence advantages."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, EOS, size=(len(LENGTHS), WIDTH))
    for b, n in enumerate(LENGTHS):
        if n <= WIDTH:
            rows[b, n - 1] = EOS
    mask = np.asarray(completion_mask(jnp.asarray(rows), EOS))
    old = rng.uniform(-3.0, -0.1, size=mask.shape)
    new = old + rng.normal(scale=0.25, size=mask.shape)
    adv = rng.normal(size=len(LENGTHS))
    return mask, new * mask, old * mask, adv


def loss_of(name, aggregation, mask, old, adv, eps_low, eps_high):
    """The aggregated loss as a function of log π_θ [B, L], as the trainer computes it."""
    mask_j, old_j = jnp.asarray(mask, jnp.float32), jnp.asarray(old, jnp.float32)
    adv_j = jnp.asarray(adv, jnp.float32)[:, None] * mask_j
    weights = AGGREGATIONS[aggregation](mask_j)

    def loss(log_prob):
        log_prob = masked_values(log_prob, mask_j)
        tokens, clipped = POLICY_LOSSES[name](log_prob, old_j, adv_j, mask_j, eps_low, eps_high)
        return aggregate(tokens, weights), clipped

    return loss


def numpy_gspo(new, old, adv, mask, eps_low, eps_high):
    """GSPO eq. 5–7 sequence by sequence: −1/G Σ_i min(s_i Â_i, clip(s_i) Â_i), s_i the geometric
    mean of the token ratios over the valid tokens."""
    terms, clipped = [], []
    for b in range(len(mask)):
        n = int(mask[b].sum())
        s = np.exp(np.sum(new[b, :n] - old[b, :n]) / n)
        terms.append(-min(s * adv[b], np.clip(s, 1 - eps_low, 1 + eps_high) * adv[b]))
        clipped.append(float(s < 1 - eps_low or s > 1 + eps_high))
    return np.mean(terms), np.array(clipped)


def numeric_gradient(f, x, h=1e-4):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.01, 0.02)])
def test_gspo_value_clip_and_gradient_against_the_sequence_formula(eps):
    mask, new, old, adv = ragged(0)
    loss = loss_of("gspo", "seq-mean-token-mean", mask, old, adv, *eps)
    (value, clipped), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(new, jnp.float32))
    expected, seq_clipped = numpy_gspo(new, old, adv, mask, *eps)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(clipped), seq_clipped[:, None] * mask)
    if eps == (0.01, 0.02):
        assert 0 < seq_clipped.sum() < len(seq_clipped)  # both regimes present
    reference = numeric_gradient(lambda x: numpy_gspo(x, old, adv, mask, *eps)[0], new.astype(np.float64))
    np.testing.assert_allclose(np.asarray(grad), reference * mask, atol=2e-5)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_cispo_value_and_gradient_against_numpy(aggregation):
    mask, new, old, adv = ragged(1)
    eps_low, eps_high = 1.0, 0.1
    loss = loss_of("cispo", aggregation, mask, old, adv, eps_low, eps_high)
    (value, clipped), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(new, jnp.float32))
    weights = np.asarray(AGGREGATIONS[aggregation](jnp.asarray(mask, jnp.float32)))
    ratio = np.exp(new - old)
    weight = np.clip(ratio, 1 - eps_low, 1 + eps_high)
    token_adv = adv[:, None] * mask
    assert float(value) == pytest.approx(np.sum(weights * -weight * token_adv * new), rel=1e-5)
    # the clipped weight is a constant: ∇ = −w r̂ Â on every valid token, clipped or not
    np.testing.assert_allclose(np.asarray(grad), -weights * weight * token_adv, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(clipped), (ratio > 1 + eps_high) * mask)
    assert np.all(np.abs(np.asarray(grad))[(ratio > 1 + eps_high) & (mask > 0) & (token_adv != 0)] > 0)


def test_vanilla_is_ppo_clip_per_token():
    mask, new, old, adv = ragged(2)
    loss = loss_of("vanilla", "token-mean", mask, old, adv, 0.2, 0.28)
    value, _ = loss(jnp.asarray(new, jnp.float32))
    ratio = np.exp(new - old)
    a = adv[:, None]
    tokens = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.28) * a)
    assert float(value) == pytest.approx(np.sum(tokens * mask) / mask.sum(), rel=1e-5)


def numpy_reinforce_pp(reward, kl, mask, beta, gamma, keep):
    """REINFORCE++ eq. 8–10 as loops: return to go of −β k_t (+ R at the last token), then
    (A − mean) / std over the valid tokens of the kept rows."""
    returns = np.zeros(mask.shape)
    for b in range(len(mask)):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            running = -beta * kl[b, t] + (reward[b] if t == n - 1 else 0.0) + gamma * running
            returns[b, t] = running
    pooled = np.concatenate([returns[b, : int(mask[b].sum())] for b in range(len(mask)) if keep[b]])
    return np.where(mask * keep[:, None] > 0, (returns - pooled.mean()) / pooled.std(), 0.0)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_advantages_against_numpy(gamma):
    mask, _, _, _ = ragged(3)
    rng = np.random.default_rng(4)
    kl = rng.normal(scale=0.2, size=mask.shape) * mask
    reward = rng.integers(0, 2, size=len(mask)).astype(float)
    keep = np.array([1, 1, 0, 1, 1, 1], float)
    got = reinforce_pp_advantages(
        jnp.asarray(reward, jnp.float32),
        jnp.asarray(kl, jnp.float32),
        jnp.asarray(mask, jnp.float32),
        0.1,
        gamma,
        jnp.asarray(keep, jnp.float32),
    )
    expected = numpy_reinforce_pp(reward, kl, mask, 0.1, gamma, keep)
    np.testing.assert_allclose(np.asarray(got) * keep[:, None], expected, rtol=1e-4, atol=1e-5)


def test_reinforce_pp_without_spread_gives_zero_advantages():
    mask = jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.float32)
    got = reinforce_pp_advantages(jnp.asarray([0.3, 0.3]), jnp.zeros((2, 3)), mask, 0.0, 1.0)
    np.testing.assert_array_equal(np.asarray(got), 0.0)


def test_new_algorithms_are_config_choices_and_variants():
    assert RLHFConfig(algo="reinforce++", group_size=1).rl_prompts == 256  # one completion per prompt
    assert RLHFConfig(algo="reinforce++").kl_estimator_name == "k1"  # the KL goes into the reward
    with pytest.raises(ConfigError) as err:
        RLHFConfig(policy_loss="ppo2")
    assert err.value.field == "policy_loss"
    with pytest.raises(ConfigError) as err:
        RLHFConfig(algo="grpo", group_size=1)
    assert err.value.field == "group_size"
    with pytest.raises(ConfigError) as err:
        RLHFConfig(algo="reinforce++", skip_equal_groups=True)
    assert err.value.field == "skip_equal_groups"
    configs = variant_configs(RLHFConfig(), list(VARIANTS))
    assert configs["gspo"].policy_loss == "gspo" and configs["gspo"].clip_eps_high == 4e-4
    assert configs["cispo"].policy_loss == "cispo" and configs["cispo"].loss_aggregation == "token-mean"
    assert configs["reinforce++"].algorithm.token_returns


def test_reinforce_pp_with_cispo_fine_tunes_end_to_end():
    from ppo_jax.rlhf import Frozen, make_setup
    from ppo_jax.rlhf.finetune import finetune
    from ppo_jax.rlhf.rollout import RLParams

    config = RLHFConfig(
        digits=1,
        d_model=16,
        num_layers=1,
        algo="reinforce++",
        group_size=1,
        policy_loss="cispo",
        rl_updates=2,
        rl_batch=16,
        ent_coef=0.1,
    )
    setup = make_setup(config)
    leaves, tree = jax.tree.flatten(setup.policy.init(jax.random.key(0)))
    noise = jax.random.split(jax.random.key(2), len(leaves))
    # off the uniform policy (the output head starts at zero, where the entropy gradient vanishes)
    params = jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise, strict=True)]
    )
    frozen = Frozen(params, None, jnp.float32(0.0), jnp.float32(1.0))
    result = finetune(setup, RLParams(params, None), frozen, jax.random.key(1))
    history = {k: np.asarray(v) for k, v in result.history.items()}
    assert all(np.all(np.isfinite(v)) for v in history.values()) and history["kl"].shape == (2,)
    assert history["kl"][0] == pytest.approx(0.0, abs=1e-6) and history["kl"][1] > 0.0  # it moved
