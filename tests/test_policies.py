"""Policy families: the GRU against a NumPy reference with episode resets, the recurrent update
on whole sequences, the cnn family, and exported policies of each family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppo_jax
from ppo_jax.engine.rollout import rollout
from ppo_jax.engine.sgd import LOCAL
from ppo_jax.engine.train import init_state, make_batch, make_context, minibatch_loss
from ppo_jax.policies import is_recurrent, unroll
from ppo_jax.runtime.files import final_returns

GRU_TINY = dict(network="gru", num_envs=4, num_steps=16, num_minibatches=2, num_epochs=2, rnn_size=8)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_gru(params, obs, reset, h0):
    """h_t of the `gru` family's equations in NumPy, h reset to 0 where reset[t] (float64)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    dense = lambda x, layer: x @ layer["kernel"] + layer["bias"]  # noqa: E731
    h, hs = np.asarray(h0, np.float64), []
    for t in range(obs.shape[0]):
        h = np.where(reset[t][:, None], 0.0, h)
        x = np.tanh(dense(np.asarray(obs[t], np.float64), p["encoder"]))
        xr, xz, xn = np.split(dense(x, p["input_gates"]), 3, axis=-1)
        hr, hz, hn = np.split(dense(h, p["hidden_gates"]), 3, axis=-1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        hs.append(h)
    return np.stack(hs)


def test_gru_states_reset_at_episode_starts_and_match_numpy():
    cfg = ppo_jax.default_config("StatelessCartPole-v1", **GRU_TINY)
    policy = make_context(cfg).policy
    assert is_recurrent(policy)
    params = policy.init(jax.random.key(0), jnp.zeros((1, 2)))
    steps, envs = 9, 3
    obs = jax.random.normal(jax.random.key(1), (steps, envs, 2))
    reset = np.zeros((steps, envs), bool)
    reset[0, 0], reset[3, 1], reset[4, 1], reset[7, :] = True, True, True, True  # a hand-built done pattern
    h0 = jax.random.normal(jax.random.key(2), (envs, cfg.rnn_size))  # a carry from an earlier rollout
    expected = _numpy_gru(params, np.asarray(obs), reset, h0)
    # the policy's own recurrence over the sequence, and step by step as the rollout applies it
    hs, h = [], h0
    for t in range(steps):
        h, _, _ = policy.apply(params, h, obs[t], jnp.asarray(reset[t]))
        hs.append(h)
    np.testing.assert_allclose(np.stack(hs), expected, rtol=1e-4, atol=1e-5)
    dist, value = unroll(policy, params, h0, obs, jnp.asarray(reset))
    step_dist = [policy.apply(params, hs[t - 1] if t else h0, obs[t], jnp.asarray(reset[t]))[1] for t in range(steps)]
    np.testing.assert_allclose(np.asarray(dist), np.stack(step_dist), rtol=1e-4, atol=1e-5)
    # at an episode start the state before the step is the initial carry: the output does not
    # depend on the carry it replaced
    other = policy.apply(params, 100.0 * h0, obs[7], jnp.asarray(reset[7]))[0]
    np.testing.assert_allclose(np.asarray(other), expected[7], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("env", "warmup", "steps"), [("StatelessCartPole-v1", 2, 64), ("Pendulum-v1", 1, 128)])
def test_recurrent_update_recomputes_the_rollouts_log_probs_first_minibatch_ratio_one(env, warmup, steps):
    """After `warmup` rollouts (the carry is mid-episode), a rollout in which episodes end
    (Pendulum's at step 200): the first minibatch of whole sequences, re-run from the stored
    start carry with the stored resets, gives back the rollout's log-probs and values."""
    cfg = ppo_jax.default_config(env, **{**GRU_TINY, "num_steps": steps})
    ctx = make_context(cfg)
    hp = cfg.hyperparams()

    def run(key):
        state = init_state(ctx, key, hp)
        state, _ = jax.lax.scan(
            lambda s, _: (s._replace(env=rollout(ctx.rollout, s.params, hp, s.env, key)[0]), None), state, None, warmup
        )
        _, traj, _ = rollout(ctx.rollout, state.params, hp, state.env, jax.random.fold_in(key, 1))
        batch = make_batch(ctx, hp, state.params, traj, state.env.policy_carry)
        mb = jax.tree.map(lambda x: x[0], ctx.split(LOCAL, key, batch))
        _, metrics = minibatch_loss(ctx, hp, state.objective_state, LOCAL, state.params, mb)
        dist, value = unroll(ctx.policy, state.params, mb.carry, mb.obs, mb.first)
        return metrics, ctx.dist.log_prob(dist, mb.action), mb.log_prob, value, mb.value, traj.first

    metrics, log_prob, old_log_prob, value, old_value, first = jax.jit(run)(jax.random.key(3))
    assert log_prob.shape == (cfg.num_steps, cfg.num_envs // cfg.num_minibatches)  # whole sequences
    assert np.asarray(first).any() and not np.asarray(first).all()  # episodes ended inside the rollout
    np.testing.assert_allclose(np.exp(np.asarray(log_prob) - np.asarray(old_log_prob)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(value), np.asarray(old_value), rtol=1e-5, atol=1e-5)
    assert abs(float(metrics["approx_kl"])) <= 1e-6 and float(metrics["clip_frac"]) == 0.0


def test_recurrent_minibatches_need_whole_env_sequences(no_compiles):
    cfg = ppo_jax.default_config("StatelessCartPole-v1", **{**GRU_TINY, "num_minibatches": 3, "num_steps": 15})
    with no_compiles(), pytest.raises(ppo_jax.ConfigError) as err:
        make_context(cfg)
    assert err.value.field == "num_minibatches" and "num_envs = 4" in str(err.value)


def test_cnn_refuses_vector_observations_before_compiling(no_compiles):
    with no_compiles(), pytest.raises(ppo_jax.ConfigError) as err:
        make_context(ppo_jax.default_config("CartPole-v1", network="cnn"))
    assert err.value.field == "network" and "--network mlp" in str(err.value)
    with pytest.raises(ppo_jax.ConfigError) as err:
        ppo_jax.default_config(network="transformer")
    assert err.value.field == "network" and "mlp, cnn, gru" in str(err.value)


def test_cnn_family_convolves_the_grid_and_trains(tmp_path):
    cfg = ppo_jax.default_config(
        "Breakout-MinAtar", network="cnn", num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 3
    )
    ctx = make_context(cfg)
    params = ctx.policy.init(jax.random.key(0), jnp.zeros((1, 10, 10, 4)))
    kernel = params["params"]["actor_torso"]["conv_0"]["kernel"]
    assert kernel.shape == (3, 3, 4, 16)
    # a 3x3 VALID convolution: the features depend on a cell only through its 3x3 neighbourhood
    obs = jnp.zeros((1, 10, 10, 4))
    dist = ctx.policy.apply(params, (), obs, None)[1]
    moved = ctx.policy.apply(params, (), obs.at[0, 0, 0, 0].set(1.0), None)[1]
    assert not np.allclose(np.asarray(dist), np.asarray(moved))
    summary = ppo_jax.run(cfg, out=tmp_path / "cnn", handle_signals=False)
    assert summary["num_updates"] == 3 and np.isfinite(summary["final_return_mean"])
    policy = ppo_jax.load_policy(tmp_path / "cnn" / f"policy-seed{cfg.seed}.npz")
    assert np.asarray(policy.act(np.zeros((10, 10, 4), np.float32))).shape == ()


def test_exported_recurrent_policy_carries_its_state(tmp_path):
    cfg = ppo_jax.default_config("StatelessCartPole-v1", **{**GRU_TINY, "total_timesteps": 4 * 16 * 2})
    ppo_jax.run(cfg, out=tmp_path / "gru", handle_signals=False)
    policy = ppo_jax.load_policy(tmp_path / "gru" / "policy-seed0.npz")
    assert policy.recurrent
    obs = jax.random.normal(jax.random.key(0), (5, 2))
    action, state = policy.act(obs)  # a new episode: state None
    assert action.shape == (5,) and state.shape == (5, cfg.rnn_size)
    # the same as the family applied step by step
    net = policy.acting.policy
    h, logits, _ = net.apply(policy.params, net.initial_carry(5), obs, jnp.ones(5, bool))
    np.testing.assert_array_equal(np.asarray(action), np.asarray(jnp.argmax(logits, -1)))
    np.testing.assert_allclose(np.asarray(state), np.asarray(h), rtol=1e-6)
    _, state2 = policy.act(obs, state)
    h2, _, _ = net.apply(policy.params, h, obs, jnp.zeros(5, bool))
    np.testing.assert_allclose(np.asarray(state2), np.asarray(h2), rtol=1e-6)


def test_gru_remembers_where_an_mlp_cannot():
    """bsuite's MemoryChain: the context shown at the first step decides the sign of the reward at
    the last; without memory the best policy earns 0 in expectation, with memory 1."""
    finals = {}
    for network in ("gru", "mlp"):
        cfg = ppo_jax.default_config(
            "MemoryChain-bsuite",
            network=network,
            total_timesteps=30_000,
            lr=3e-3,
            num_envs=8,
            num_steps=32,
            num_minibatches=2,
            hidden_sizes=(32, 32),
            **({"rnn_size": 32} if network == "gru" else {}),  # a field of the gru family alone
        )
        keys = jax.vmap(jax.random.key)(np.arange(3, dtype=np.uint32))
        result = jax.jit(ppo_jax.make_train_batch(cfg))(keys)
        finals[network] = final_returns(np.asarray(result.metrics["episode_return"]))
    assert np.all(finals["gru"] > 0.9), finals
    assert np.all(np.abs(finals["mlp"]) < 0.3), finals
