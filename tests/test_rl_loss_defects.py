"""The RL loss on ragged completions with a model that is very sure EOS never follows EOS, and the
approx-KL metric and the one k3 estimator, each against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.distributions import categorical_log_prob
from ppo_jax.core.losses import approx_kl_k3, kl_k3_terms
from ppo_jax.core.token_losses import completion_mask, kl_k3
from ppo_jax.rlhf import LanguageModel, RLHFConfig, make_setup, recompute_sampler
from ppo_jax.rlhf.arithmetic import EOS
from ppo_jax.rlhf.finetune import rl_loss
from ppo_jax.rlhf.rollout import RLParams, TrainBatch
from ppo_jax.rlhf.setup import completion_logits

jax.config.update("jax_numpy_rank_promotion", "raise")

VOCAB = 13


def sure_lm(eos_after_eos: float) -> LanguageModel:
    """logits = b + (EOS row of the previous token) · e_EOS · `eos_after_eos`: a model whose
    log π(EOS | previous EOS) is about `eos_after_eos` (a real checkpoint can go below −88.7)."""

    def logits_fn(params, tokens):
        after_eos = (tokens == EOS).astype(jnp.float32)[..., None] * (jnp.arange(VOCAB) == EOS)[None, None, :]
        return params["b"][tokens] + eos_after_eos * after_eos

    def init(key):
        return {"b": jax.random.normal(key, (VOCAB, VOCAB))}

    return LanguageModel(init, logits_fn, None, recompute_sampler(logits_fn))


def ragged_batch(setup, params, lengths, rng, drift=0.0) -> TrainBatch:
    """Completions with `lengths` valid tokens (EOS last, EOS padding after), the old and
    reference log-probs as `collect` stores them (masked), the old ones `drift` away."""
    width = 6
    prompts = setup.task.prompts(jax.random.key(1), len(lengths))
    rows = rng.integers(0, 10, size=(len(lengths), width))
    for b, n in enumerate(lengths):
        rows[b, n - 1 :] = EOS
    completions = jnp.asarray(rows, jnp.int32)
    mask = completion_mask(completions, EOS)
    log_prob = categorical_log_prob(completion_logits(setup.policy, params, prompts, completions), completions)
    old = jnp.where(mask > 0, log_prob + drift * jnp.asarray(rng.normal(size=mask.shape), jnp.float32), 0.0)
    ref = jnp.where(mask > 0, log_prob + 0.3 * jnp.asarray(rng.normal(size=mask.shape), jnp.float32), 0.0)
    adv = jnp.asarray(rng.normal(size=len(lengths)), jnp.float32)[:, None] * mask
    zeros = jnp.zeros(mask.shape)
    return TrainBatch(prompts, completions, mask, old, ref, adv, zeros, zeros)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_loss_and_gradient_stay_finite_when_eos_after_eos_is_near_impossible(estimator):
    config = RLHFConfig(digits=1, kl_estimator=estimator, kl_coef=0.1)
    setup = make_setup(config)._replace(policy=sure_lm(-300.0))
    params = setup.policy.init(jax.random.key(0))
    batch = ragged_batch(setup, params, [1, 2, 4, 6], np.random.default_rng(0))
    hp = config.rl_hyperparams()
    (loss, metrics), grad = jax.value_and_grad(lambda p: rl_loss(setup, hp, RLParams(p, None), batch), has_aux=True)(
        params
    )
    assert np.isfinite(float(loss))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert np.all(np.isfinite(np.asarray(grad["b"])))


def test_approx_kl_metric_is_k3_of_the_sampling_policy_against_numpy():
    # Tokens are sampled from π_old; KL[π_old ‖ π_θ] = E_old[(r − 1) − log r] with r = π_θ / π_old.
    config = RLHFConfig(digits=1)
    setup = make_setup(config)._replace(policy=sure_lm(-3.0))
    params = setup.policy.init(jax.random.key(0))
    rng = np.random.default_rng(1)
    batch = ragged_batch(setup, params, [1, 3, 5, 6, 2], rng, drift=0.5)
    _, metrics = rl_loss(setup, config.rl_hyperparams(), RLParams(params, None), batch)
    logits = completion_logits(setup.policy, params, batch.prompts, batch.completions)
    new = np.asarray(categorical_log_prob(logits, batch.completions))
    old, mask = np.asarray(batch.log_prob), np.asarray(batch.mask)
    terms = [
        np.exp(n - o) - 1 - (n - o) for n, o, m in zip(new.ravel(), old.ravel(), mask.ravel(), strict=True) if m > 0
    ]
    assert float(metrics["approx_kl"]) == pytest.approx(np.mean(terms), rel=1e-5)


def test_one_k3_estimator_against_numpy_and_its_exact_expectation():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(7), size=5)
    q = rng.dirichlet(np.ones(7), size=5)
    log_p, log_q = np.log(p), np.log(q)
    # per sample x ~ p: k3 = q/p − 1 − log(q/p)
    terms = np.asarray(kl_k3_terms(jnp.asarray(log_p), jnp.asarray(log_q)))
    np.testing.assert_allclose(terms, q / p - 1 - np.log(q / p), rtol=1e-5, atol=1e-7)
    # E_p[k3] is exactly KL[p ‖ q]
    exact = np.sum(p * (log_p - log_q), axis=1)
    np.testing.assert_allclose(np.sum(p * terms, axis=1), exact, rtol=1e-5)
    # the classic metric: KL[π_old ‖ π_θ] from samples of π_old; the token penalty: KL[π_θ ‖ π_ref]
    # from samples of π_θ. Both are this estimator with the sampling policy first.
    a, b = jnp.asarray(log_p[0]), jnp.asarray(log_q[0])
    assert float(approx_kl_k3(b, a)) == pytest.approx(float(jnp.mean(kl_k3_terms(a, b))), rel=1e-6)
    np.testing.assert_allclose(np.asarray(kl_k3(a, b)), np.asarray(kl_k3_terms(a, b)), rtol=1e-6)


def test_masked_mean_ignores_what_a_mask_hides():
    from ppo_jax.core.token_losses import masked_mean

    x = jnp.asarray([[1.0, 3.0, jnp.inf], [2.0, jnp.nan, -jnp.inf]])
    mask = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(masked_mean(x, mask)) == pytest.approx(2.0)
