"""Whole-program properties of `make_train`: truncation, on-policy start, determinism, vmap, learning.

Compiles are the expensive part on a CPU, so programs are shared through module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from ppo_jax import ActorCritic, PPOConfig
from ppo_jax.engine.parts import make_policy
from ppo_jax.engine.rollout import rollout
from ppo_jax.engine.sgd import LOCAL
from ppo_jax.engine.train import (
    NONFINITE_FLAGS,
    describe_nonfinite,
    init_state,
    make_batch,
    make_context,
    minibatch_loss,
    nonfinite_code,
    ppo_optimizer,
    run_updates,
)
from ppo_jax.envs import env_spec
from ppo_jax.policies import unroll

# 3 updates of 4 envs x 32 steps, 2 epochs of 2 minibatches: compiles and runs in seconds.
TINY = PPOConfig(
    num_envs=4, num_steps=32, num_epochs=2, num_minibatches=2, total_timesteps=4 * 32 * 3, hidden_sizes=(16, 16)
)
NUM_SEEDS = 3


def digest(tree) -> str:
    """sha256 over the bytes (and dtypes and shapes) of every leaf."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def assert_trees_close(got, want):
    """Same tree structure and every leaf close (float32 runs differ slightly between programs)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5, equal_nan=True)


@pytest.fixture(scope="module")
def tiny_train():
    return jax.jit(ppo_jax.make_train(TINY))


@pytest.fixture(scope="module")
def seed_keys():
    return jax.random.split(jax.random.key(42), NUM_SEEDS)


@pytest.fixture(scope="module")
def tiny_vmapped(seed_keys):
    return jax.block_until_ready(jax.jit(jax.vmap(ppo_jax.make_train(TINY)))(seed_keys))


# --- truncation: an infinite-horizon task ------------------------------------------------------


def test_time_limit_truncation_bootstraps_to_the_infinite_horizon_value(always_one_env):
    """Reward 1 forever, cut by a 20-step time limit: V(s0) must approach 1/(1−γ) = 10, not the
    truncated sum Σ_{k<20} γ^k ≈ 8.78 (or ≈ 6.9, the fixed point when a cut is treated as terminal)."""
    gamma = 0.9
    cfg = PPOConfig(
        num_envs=4,
        num_steps=32,
        num_epochs=4,
        num_minibatches=4,
        total_timesteps=4 * 32 * 30,
        hidden_sizes=(16,),
        gamma=gamma,
        lr=1e-2,
        clip_value_loss=False,
        ent_coef=0.0,
    )
    env, params = always_one_env, always_one_env.default_params
    result = jax.jit(ppo_jax.make_train(cfg, env=env, env_params=params))(jax.random.key(0))
    assert float(result.metrics["episode_length"][-1]) == 20.0  # gymnax did truncate the episodes
    network = make_policy(cfg, env_spec(env, params)).network
    obs0, _ = env.reset(jax.random.key(1), params)
    value = float(network.apply(result.state.params, obs0[None], method=ActorCritic.value)[0])
    assert value == pytest.approx(1.0 / (1.0 - gamma), abs=0.25), value


# --- the first minibatch of an update is exactly on-policy ---------------------------------


def first_minibatch_check(cfg: PPOConfig, updates_before: int):
    ctx = make_context(cfg)
    hp = cfg.hyperparams()

    def run(key):
        state = init_state(ctx, key, hp)
        if updates_before:
            state, _ = run_updates(ctx, state, hp, updates_before)
        key_roll = jax.random.fold_in(key, 1)
        _, traj, _ = rollout(ctx.rollout, state.params, hp, state.env, key_roll)
        batch = make_batch(ctx, hp, state.params, traj, state.env.policy_carry)
        mb = jax.tree.map(
            lambda x: x[0], ctx.split(LOCAL, key_roll, batch)
        )  # the first minibatch, as the update splits
        _, metrics = minibatch_loss(ctx, hp, state.objective_state, LOCAL, state.params, mb)
        dist, value = unroll(ctx.policy, state.params, mb.carry, mb.obs, mb.first)
        return metrics, ctx.dist.log_prob(dist, mb.action), mb.log_prob, value, mb.value

    return jax.jit(run)(jax.random.key(3))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_first_minibatch_of_first_epoch_has_ratio_one(env):
    cfg = ppo_jax.default_config(env, num_envs=4, num_steps=64, num_minibatches=4, total_timesteps=4 * 64 * 4)
    for updates_before in (0, 2):
        metrics, log_prob, old_log_prob, value, old_value = first_minibatch_check(cfg, updates_before)
        ratio = np.exp(np.asarray(log_prob, np.float64) - np.asarray(old_log_prob, np.float64))
        np.testing.assert_allclose(ratio, 1.0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(value), np.asarray(old_value), rtol=1e-6, atol=1e-6)
        assert abs(float(metrics["approx_kl"])) <= 1e-6
        assert float(metrics["clip_frac"]) == 0.0


# --- determinism ----------------------------------------------------------------------------


def test_same_key_gives_bit_identical_params_and_metrics(tiny_train):
    a = tiny_train(jax.random.key(7))
    b = tiny_train(jax.random.key(7))
    assert digest(a.state.params) == digest(b.state.params)
    assert digest(a.metrics) == digest(b.metrics)
    assert digest(a.state.opt_state) == digest(b.state.opt_state)


def test_different_keys_give_different_params(tiny_train):
    a = tiny_train(jax.random.key(7))
    b = tiny_train(jax.random.key(8))
    assert digest(a.state.params) != digest(b.state.params)
    assert digest(a.metrics["policy_loss"]) != digest(b.metrics["policy_loss"])


def test_metrics_are_one_value_per_update(tiny_train):
    result = tiny_train(jax.random.key(7))
    num_updates = TINY.num_updates
    for name, values in result.metrics.items():
        assert np.shape(values) == (num_updates,), name
    np.testing.assert_array_equal(result.metrics["env_steps"], TINY.batch_size * np.arange(1, num_updates + 1))
    # Linear annealing to 0 over all minibatch steps: at the start of update u the rate is lr·(1 − u/U).
    np.testing.assert_allclose(result.metrics["lr"], TINY.lr * (1.0 - np.arange(num_updates) / num_updates), rtol=1e-6)
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "grad_norm"):
        assert np.all(np.isfinite(result.metrics[name])), name
    assert np.all(np.asarray(result.metrics["approx_kl"]) >= 0.0)
    assert int(result.state.update) == num_updates


# --- vmap over seeds ---------------------------------------------------------------------------


def test_jit_of_vmap_of_make_train_runs_one_program_per_key(tiny_vmapped):
    for name, values in tiny_vmapped.metrics.items():
        assert np.shape(values) == (NUM_SEEDS, TINY.num_updates), name
    for leaf in jax.tree.leaves(tiny_vmapped.state.params):
        assert leaf.shape[0] == NUM_SEEDS
    assert np.all(np.isfinite(tiny_vmapped.metrics["policy_loss"]))
    digests = {digest(jax.tree.map(lambda x: x[i], tiny_vmapped.state.params)) for i in range(NUM_SEEDS)}
    assert len(digests) == NUM_SEEDS  # every seed trained differently


def test_vmap_over_seeds_agrees_with_separate_runs(tiny_train, tiny_vmapped, seed_keys):
    for i in range(NUM_SEEDS):
        single = tiny_train(seed_keys[i])
        batched = jax.tree.map(lambda x: x[i], (tiny_vmapped.state.params, tiny_vmapped.metrics))
        assert_trees_close(batched, (single.state.params, single.metrics))


def test_one_run_batch_agrees_with_the_single_run_program(tiny_train, seed_keys):
    """`make_train_batch` traces a run axis of size 1 without the axis; the result must still
    be the batched layout ([num_updates, 1] metrics, [1, ...] params) of the same run."""
    batch = jax.jit(ppo_jax.make_train_batch(TINY))(seed_keys[:1])
    single = tiny_train(seed_keys[0])
    for name, values in batch.metrics.items():
        assert np.shape(values) == (TINY.num_updates, 1), name
    assert jax.tree.structure(batch.state) == jax.tree.structure(single.state)
    params, opt_state = jax.tree.map(lambda x: x[0], (batch.state.params, batch.state.opt_state))
    assert_trees_close((params, opt_state), (single.state.params, single.state.opt_state))
    assert_trees_close({k: v[:, 0] for k, v in batch.metrics.items()}, single.metrics)


# Every traced hyperparameter moved away from its default (init_log_std and the KL-penalty
# coefficients do not act on a discrete clipped-objective run).
SWEPT = dict(
    lr=1e-3, gamma=0.9, gae_lambda=0.8, clip_eps=0.1, ent_coef=0.05, vf_coef=1.0, max_grad_norm=0.2, adam_eps=1e-3
)


def test_vmapped_hyperparameters_equal_separately_configured_runs(tiny_train, seed_keys):
    """A hyperparameter passed as a traced leaf must act exactly like the same value in the config."""
    other = TINY.replace(**SWEPT)
    hparams = jax.tree.map(lambda a, b: jnp.stack([a, b]), TINY.hyperparams(), other.hyperparams())
    keys = seed_keys[:2]
    swept = jax.jit(jax.vmap(ppo_jax.make_train(TINY)))(keys, hparams)
    references = [tiny_train(keys[0]), jax.jit(ppo_jax.make_train(other))(keys[1])]
    for i, ref in enumerate(references):
        batched = jax.tree.map(lambda x: x[i], (swept.state.params, swept.metrics))
        assert_trees_close(batched, (ref.state.params, ref.metrics))
    np.testing.assert_allclose(swept.metrics["lr"][1], SWEPT["lr"] * (1 - np.arange(TINY.num_updates) / 3), rtol=1e-6)


@pytest.mark.parametrize("eps", [1e-8, 1e-5, 1e-3])
def test_first_optimizer_step_is_clipped_adam_with_the_configured_eps(eps):
    """Adam's first step, bias-corrected: m̂ = g, v̂ = g², so Δθ = −lr · g / (|g| + eps), after the
    gradient is scaled to global norm ≤ max_grad_norm (hand-derived, in float64)."""
    config = TINY.replace(adam_eps=eps, anneal_lr=False, lr=0.1, max_grad_norm=0.5)
    hparams = config.hyperparams()
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([3e-4, -2e-5, 0.0])}
    opt = ppo_optimizer(config, hparams)
    updates, _ = opt.update(grads, opt.init(params), params)
    g = np.array([3e-4, -2e-5, 0.0])
    g = g * min(1.0, 0.5 / np.linalg.norm(g))
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * g / (np.abs(g) + eps), rtol=1e-5, atol=1e-9)
    big = {"w": jnp.array([3.0, 4.0, 0.0])}  # norm 5: clipped to 0.5, then Adam normalises it
    updates, _ = opt.update(big, opt.init(params), params)
    g = np.array([0.3, 0.4, 0.0])
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * g / (np.abs(g) + eps), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("anneal", [True, False])
def test_optimizer_anneals_the_learning_rate_over_every_minibatch_step(anneal, tiny_train):
    """With a constant gradient g = 1, Adam's bias-corrected step is −lr_t · g / (|g| + eps), so
    the step sizes read off the rate the optimizer applies at each of the N = updates × epochs ×
    minibatches steps: lr·(1 − t/N) (linear decay to 0 after the last step), or lr throughout.
    Annealing per update instead of per minibatch step would reach 0 after `num_updates` steps."""
    config = TINY.replace(anneal_lr=anneal, lr=0.01, max_grad_norm=1e9)
    steps = config.num_updates * config.num_epochs * config.num_minibatches
    opt = ppo_optimizer(config, config.hyperparams())
    params = {"w": jnp.zeros(2)}

    def step(state, _):
        updates, state = opt.update({"w": jnp.ones(2)}, state, params)
        return state, updates["w"][0]

    _, sizes = jax.lax.scan(step, opt.init(params), None, length=steps)
    want = 0.01 * (1.0 - np.arange(steps) / steps) if anneal else np.full(steps, 0.01)
    np.testing.assert_allclose(-np.asarray(sizes), want / (1.0 + config.adam_eps), rtol=1e-4)
    # the training program takes exactly those N optimizer steps
    counts = [x for x in jax.tree.leaves(tiny_train(jax.random.key(7)).state.opt_state) if x.dtype == jnp.int32]
    assert counts and all(int(c) == steps for c in counts)


# --- learning ----------------------------------------------------------------------------------


def late_return(episode_return: np.ndarray) -> np.ndarray:
    """Mean episode return over the last 10% of updates (NaN where no episode finished), per run."""
    tail = max(1, episode_return.shape[-1] // 10)
    return np.nanmean(episode_return[..., -tail:], axis=-1)


def test_cartpole_learns_to_balance_over_seeds():
    cfg = ppo_jax.default_config("CartPole-v1")
    assert (cfg.num_envs, cfg.num_steps, cfg.total_timesteps) == (8, 32, 150_000)
    keys = jax.random.split(jax.random.key(0), 4)
    result = jax.jit(jax.vmap(ppo_jax.make_train(cfg)))(keys)
    returns = np.asarray(result.metrics["episode_return"])
    final = late_return(returns)
    assert np.mean(final) >= 475.0, final
    assert np.nanmean(returns[:, :5]) < 100.0  # it did start from a poor policy


def test_pendulum_improves_clearly():
    # Seeds run one after another with one compiled program (not vmapped; see the report on XLA:CPU).
    cfg = ppo_jax.default_config("Pendulum-v1", total_timesteps=200_000)
    train = jax.jit(ppo_jax.make_train(cfg))
    first, last = [], []
    for seed in range(2):
        returns = np.asarray(train(jax.random.key(seed)).metrics["episode_return"])
        head = max(2, len(returns) // 10)
        first.append(np.nanmean(returns[:head]))
        last.append(late_return(returns))
    first, last = np.mean(first), np.mean(last)
    # Measured at 2e5 steps over 6 seeds: first updates ≈ −1150 … −1280, last 10% ≈ −145 … −180.
    assert last >= -400.0, (first, last)
    assert last - first >= 700.0, (first, last)


@pytest.mark.parametrize(("hidden", "packed"), [((16, 16), True), ((160, 160), False)])
def test_rollout_log_probs_and_values_are_the_networks_for_packed_and_plain_policies(hidden, packed):
    """Narrow networks run packed in the rollout, wide ones as they are; either way the stored
    log π(a|s) and V(s) are the network's own on the stored observations."""
    from ppo_jax.fast_paths import FusedActorCritic

    for env in ("CartPole-v1", "Pendulum-v1"):
        cfg = ppo_jax.default_config(env, num_envs=3, num_steps=8, hidden_sizes=hidden)
        ctx = make_context(cfg)
        state = init_state(ctx, jax.random.key(5), cfg.hyperparams())
        assert isinstance(ctx.policy.rollout_apply(state.params).args[-1], FusedActorCritic) == packed
        _, traj, _ = jax.jit(lambda s: rollout(ctx.rollout, s.params, cfg.hyperparams(), s.env, s.key))(state)
        out = ctx.policy.network.apply(state.params, traj.obs)
        log_prob = ctx.dist.log_prob(out.dist, traj.action)
        np.testing.assert_allclose(np.asarray(traj.log_prob), np.asarray(log_prob), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(traj.value), np.asarray(out.value), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("every", "batched"), [(1, False), (3, True)])
def test_callback_every_reports_every_kth_update_and_the_last(every, batched):
    cfg = TINY.replace(total_timesteps=4 * 32 * 7)
    seen = []
    callback = lambda update, metrics: seen.append(int(np.asarray(update).ravel()[0]))  # noqa: E731
    if batched:
        fn = ppo_jax.make_train_batch(cfg, callback=callback, callback_every=every)
        jax.block_until_ready(jax.jit(fn)(jax.random.split(jax.random.key(0), 2)))
    else:
        fn = ppo_jax.make_train(cfg, callback=callback, callback_every=every)
        jax.block_until_ready(jax.jit(fn)(jax.random.key(0)))
    expected = [u for u in range(1, 8) if u % every == 0 or u == 7]
    assert seen == expected
    with pytest.raises(ppo_jax.ConfigError, match="callback_every"):
        ppo_jax.make_train(cfg, callback=callback, callback_every=0)


# --- non-finite detection ----------------------------------------------------------------------


def test_nonfinite_code_flags_exactly_the_quantities_holding_nan_or_inf():
    class Traj(NamedTuple):
        reward: jax.Array
        obs: jax.Array

    losses = {"policy_loss": jnp.zeros((2, 3)), "value_loss": jnp.ones((2, 3)), "grad_norm": jnp.ones((2, 3))}
    params = {"w": jnp.ones((4, 5)), "b": jnp.zeros(5), "steps": jnp.arange(3)}  # int leaves cannot be NaN
    traj = Traj(jnp.zeros((8, 2)), jnp.zeros((8, 2, 3), jnp.uint8))
    fn = jax.jit(nonfinite_code)
    assert int(fn(losses, params, traj)) == 0
    poison = {
        1: lambda: ({**losses, "value_loss": losses["value_loss"].at[1, 2].set(jnp.inf)}, params, traj),
        2: lambda: ({**losses, "grad_norm": losses["grad_norm"].at[0, 0].set(jnp.nan)}, params, traj),
        4: lambda: (losses, {**params, "b": params["b"].at[4].set(-jnp.inf)}, traj),
        8: lambda: (losses, params, traj._replace(reward=traj.reward.at[7, 1].set(jnp.nan))),
    }
    for bit, make in poison.items():
        assert int(fn(*make())) == bit, NONFINITE_FLAGS[bit]
    everything = ({**losses, "policy_loss": losses["policy_loss"] * jnp.nan}, {**params, "w": params["w"] / 0.0}, traj)
    assert int(fn(*everything)) == 1 | 4
    assert describe_nonfinite(1 | 4) == "loss, parameters"
