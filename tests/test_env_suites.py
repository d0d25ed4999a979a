"""Suite adapters against their suites stepped by hand, registry errors, legal-action masks, and a
short learning run. Each suite's tests are skipped when its extra is not installed.

The reference loops below use only the suite's own API and gymnax's key convention (a step key
is split into the suite step's key and the reset key): observations after auto-reset, rewards,
terminated/truncated flags and the pre-reset final observations must agree with the adapter's
`env.step` over a few hundred random steps, with episode lengths short enough for time-limit
cuts to happen.
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.envs import env_spec, make_env
from ppo_jax.envs.adapter import discrete_space
from ppo_jax.errors import ConfigError

NUM_ENVS = 3


@pytest.fixture(autouse=True)
def _suite_broadcasting():
    """The suites' own step functions rely on NumPy rank promotion, which conftest makes an error."""
    with jax.numpy_rank_promotion("allow"):
        yield


def _flat(tree) -> jax.Array:
    """Leaves of an observation raveled to float32 and concatenated (the test's own flattening)."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)])


def _run_pair(env, params, ref_reset, ref_step, num_steps: int, seed: int = 0):
    """Adapter and reference side by side for NUM_ENVS envs and `num_steps` random actions.

    ref_reset(key) -> (state, obs); ref_step(key, state, action) -> (state, obs, reward, terminated,
    truncated) without auto-reset; obs already encoded as the adapter encodes it.
    """
    space = env.action_space(params)

    def one_env(key):
        key_reset, key_run = jax.random.split(key)
        obs, state = env.reset(key_reset, params)
        ref_state, ref_obs = ref_reset(key_reset)

        def body(carry, key_t):
            state, ref_state = carry
            key_act, key_env = jax.random.split(key_t)
            action = space.sample(key_act)
            obs, state, reward, terminated, truncated, info = env.step(key_env, state, action, params)
            key_step, key_auto = jax.random.split(key_env)
            stepped, final, r, d, t = ref_step(key_step, ref_state, action)
            reset_state, reset_obs = ref_reset(key_auto)
            done = d | t
            pick = lambda a, b: jnp.where(done, a, b)  # noqa: E731
            ref_state = jax.tree.map(pick, reset_state, stepped)
            ref_obs = jnp.where(done, reset_obs, final)
            out = dict(
                obs=(obs, ref_obs),
                reward=(reward, jnp.asarray(r, jnp.float32)),
                terminated=(terminated, jnp.asarray(d, bool)),
                truncated=(truncated, jnp.asarray(t, bool)),
                final=(info["final_observation"], final),
            )
            return (state, ref_state), out

        _, out = jax.lax.scan(body, (state, ref_state), jax.random.split(key_run, num_steps))
        out["first"] = (obs, ref_obs)
        return out

    out = jax.jit(jax.vmap(one_env))(jax.random.split(jax.random.key(seed), NUM_ENVS))
    return jax.tree.map(np.asarray, out)


def _check(out, atol=1e-5, terminations=True):
    for name, (got, want) in out.items():
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=name)
    assert out["truncated"][1].any(), "no time-limit cut happened: shorten the episodes"
    if terminations:
        assert out["terminated"][1].any(), "no termination happened"
    assert not (out["terminated"][0] & out["truncated"][0]).all()


# -- navix --------------------------------------------------------------------------------------


def test_navix_matches_suite():
    navix = pytest.importorskip("navix")
    from navix.environments.environment import StepType

    env, params = make_env("navix/Navix-Empty-5x5-v0", max_steps=30)
    suite = navix.make("Navix-Empty-5x5-v0", max_steps=30)

    def ref_reset(key):
        ts = suite.reset(key)
        return ts, ts.observation.astype(jnp.float32)

    def ref_step(key, ts, action):
        ts = suite._step(ts, action)
        obs = ts.observation.astype(jnp.float32)
        return ts, obs, ts.reward, ts.step_type == StepType.TERMINATION, ts.step_type == StepType.TRUNCATION

    assert params.max_steps_in_episode == 30
    _check(_run_pair(env, params, ref_reset, ref_step, 300))


# -- xminigrid ----------------------------------------------------------------------------------


def test_xminigrid_matches_suite():
    xminigrid = pytest.importorskip("xminigrid")

    env, params = make_env("xminigrid/MiniGrid-Empty-5x5", max_steps=30)
    suite, suite_params = xminigrid.make("MiniGrid-Empty-5x5", max_steps=30)

    def ref_reset(key):
        ts = suite.reset(suite_params, key)
        return ts, ts.observation.astype(jnp.float32)

    def ref_step(key, ts, action):
        ts = suite.step(suite_params, ts, action)
        last = ts.step_type == 2
        return ts, ts.observation.astype(jnp.float32), ts.reward, last & (ts.discount == 0), last & (ts.discount == 1)

    _check(_run_pair(env, params, ref_reset, ref_step, 300))


# -- jumanji ------------------------------------------------------------------------------------


def _jumanji_ref(suite, time_limit=None):
    def encode(obs):
        mask = obs.action_mask
        return jnp.concatenate([_flat(obs._replace(action_mask=None)), jnp.ravel(mask).astype(jnp.float32)])

    def ref_reset(key):
        state, ts = suite.reset(key)
        return state, encode(ts.observation)

    def ref_step(key, state, action):
        state, ts = suite.step(state, action)
        last = ts.step_type == 2
        cut = last & (ts.discount != 0)
        if time_limit is not None:  # Snake ends at its time limit with discount 0
            cut = cut | (last & (state.step_count >= time_limit))
        return state, encode(ts.observation), ts.reward, last & (ts.discount == 0) & ~cut, cut

    return ref_reset, ref_step


def test_jumanji_snake_matches_suite():
    jumanji = pytest.importorskip("jumanji")
    env, params = make_env("jumanji/Snake-v1", time_limit=15)
    ref_reset, ref_step = _jumanji_ref(jumanji.make("Snake-v1", time_limit=15), time_limit=15)
    spec = env_spec(env, params)
    assert spec.discrete and spec.action_dim == 4 and spec.mask_size == 4
    _check(_run_pair(env, params, ref_reset, ref_step, 120))


def test_jumanji_evaluation_limit_is_the_env_s_time_limit_or_far_past_a_long_2048_game():
    jumanji = pytest.importorskip("jumanji")
    from ppo_jax.engine.evaluate import max_episode_steps

    _, params = make_env("jumanji/Snake-v1")
    assert max_episode_steps(params) == jumanji.make("Snake-v1").time_limit
    _, params = make_env("jumanji/Game2048-v1")  # no time limit: a game ends when the board is full
    assert getattr(jumanji.make("Game2048-v1"), "time_limit", None) is None
    # a 2048 game that reaches the 4096 tile takes about 2,000 moves (each move adds a 2 or a 4)
    assert max_episode_steps(params) >= 4096 // 2


def test_jumanji_multi_discrete_is_one_discrete():
    jumanji = pytest.importorskip("jumanji")
    env, params = make_env("jumanji/Minesweeper-v0")
    spec = env_spec(env, params)
    assert spec.action_dim == 100 and spec.mask_size == 100 and env.nvec == (10, 10)
    suite = jumanji.make("Minesweeper-v0")
    state, ts = suite.reset(jax.random.key(1))
    _, ref = suite.step(state, jnp.array([3, 7], jnp.int32))
    obs, st = env.reset(jax.random.key(1), params)
    obs, st, reward, terminated, truncated, info = env.step(jax.random.key(2), st, jnp.int32(37), params)
    np.testing.assert_allclose(reward, ref.reward)
    np.testing.assert_allclose(info["final_observation"][:100], jnp.ravel(ref.observation.board))
    assert obs[-100:].sum() == ts.observation.action_mask.sum() - 1 or bool(terminated)


def test_masked_policy_never_picks_illegal_actions():
    pytest.importorskip("jumanji")
    from ppo_jax.config import PPOConfig
    from ppo_jax.engine.train import make_context
    from ppo_jax.envs import action_distribution
    from ppo_jax.policies import MaskedLogits

    config = PPOConfig(env="jumanji/Minesweeper-v0", num_envs=2, num_steps=8, total_timesteps=16)
    ctx = make_context(config)
    assert isinstance(ctx.rollout.policy, MaskedLogits)
    obs, _ = jax.vmap(ctx.rollout.env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), 64), ctx.rollout.env_params
    )
    mask = np.asarray(obs[:, -100:]) > 0.5
    mask[:, :50] = False  # mark half the board illegal by hand
    obs = obs.at[:, -100:].set(jnp.asarray(mask, jnp.float32))
    params = ctx.rollout.policy.init(jax.random.key(1), obs[:1])
    _, logits, _ = ctx.rollout.policy.apply(params, (), obs, None)
    dist = action_distribution(ctx.rollout.spec)
    actions = np.asarray(dist.sample(jax.random.key(2), logits)[0])
    assert mask[np.arange(64), actions].all()
    assert np.isfinite(np.asarray(dist.entropy(logits))).all()
    with pytest.raises(ConfigError, match="normalize_obs"):
        make_context(config.replace(normalize_obs=True))


# -- craftax ------------------------------------------------------------------------------------


def test_craftax_matches_suite():
    pytest.importorskip("craftax")
    from craftax.craftax_env import make_craftax_env_from_name

    env, params = make_env("craftax/Craftax-Classic-Symbolic-v1", max_timesteps=25)
    suite = make_craftax_env_from_name("Craftax-Classic-Symbolic-v1", auto_reset=False)
    suite_params = suite.default_params.replace(max_timesteps=25)

    def ref_reset(key):
        obs, state = suite.reset_env(key, suite_params)
        return state, obs

    def ref_step(key, state, action):
        obs, state, reward, done, info = suite.step_env(key, state, action, suite_params)
        timeout = state.timestep >= suite_params.max_timesteps
        return state, obs, reward, done & ~timeout, timeout

    _check(_run_pair(env, params, ref_reset, ref_step, 60), terminations=False)


# -- brax and playground ------------------------------------------------------------------------


def _brax_ref(wrapped):
    def ref_reset(key):
        state = wrapped.reset(key)
        return state, state.obs

    def ref_step(key, state, action):
        state = wrapped.step(state, action)
        cut = state.info["truncation"] > 0
        return state, state.obs, state.reward, (state.done > 0) & ~cut, cut

    return ref_reset, ref_step


def test_brax_matches_suite():
    pytest.importorskip("brax")
    from brax import envs

    env, params = make_env("brax/inverted_pendulum@spring", episode_length=25)
    wrapped = envs.create("inverted_pendulum", episode_length=25, auto_reset=False, backend="spring")
    _check(_run_pair(env, params, *_brax_ref(wrapped), 80), atol=1e-4)


def test_playground_matches_suite():
    pytest.importorskip("mujoco_playground")
    from brax.envs.wrappers.training import EpisodeWrapper
    from mujoco_playground import registry

    env, params = make_env("playground/CartpoleBalance", episode_length=10)
    wrapped = EpisodeWrapper(registry.load("CartpoleBalance", config_overrides={"impl": "jax"}), 10, 1)
    _check(_run_pair(env, params, *_brax_ref(wrapped), 25), atol=1e-4, terminations=False)


# -- the registry -------------------------------------------------------------------------------


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "craftax" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'ppo_jax\[craftax\]'") as err:
        make_env("craftax/Craftax-Classic-Symbolic-v1")
    assert "\n" not in str(err.value)


def test_unknown_suite_and_names():
    with pytest.raises(ConfigError, match="allowed prefixes: brax, playground"):
        make_env("gym/CartPole-v1")
    with pytest.raises(ConfigError, match="names no environment"):
        make_env("navix/")
    with pytest.raises(ConfigError, match="unknown gymnax environment"):
        make_env("CartPol-v1")
    if importlib.util.find_spec("navix") is not None:
        with pytest.raises(ConfigError, match="did you mean navix/Navix-Empty-5x5-v0"):
            make_env("navix/Navix-Empty-5x5")


def test_joint_action_space_too_large_is_refused():
    with pytest.raises(ConfigError, match="allowed: Discrete, Box, or multi-discrete") as err:
        discrete_space("Big-v0", (100, 100))
    assert err.value.field == "env"
    space, nvec = discrete_space("Small-v0", (4, 5))
    assert space.n == 20 and nvec == (4, 5)


# -- learning -----------------------------------------------------------------------------------


def test_navix_empty_reaches_full_success():
    """Navix-Empty-5x5 (reward 1 at the goal, 100-step limit): after 8e4 steps the policy, acting
    stochastically as it was trained, reaches the goal in every one of 64 evaluation episodes."""
    pytest.importorskip("navix")
    import ppo_jax
    from ppo_jax.engine.evaluate import Acting, evaluate
    from ppo_jax.engine.train import make_context

    config = ppo_jax.PPOConfig(env="navix/Navix-Empty-5x5-v0", num_envs=16, num_steps=64, total_timesteps=81_920)
    result = jax.jit(ppo_jax.make_train(config))(jax.random.key(0))
    roll = make_context(config).rollout
    acting = Acting(roll.policy, roll.dist, roll.spec)
    run = jax.jit(evaluate, static_argnums=(0, 2, 6, 7, 8))
    out = run(roll.env, roll.env_params, acting, result.state.params, None, jax.random.key(1), 64, 100, True)
    assert np.asarray(out.returns).min() == 1.0
    assert np.asarray(out.lengths).max() < 100


def test_reset_ratio_shares_each_drawn_reset_among_neighbouring_envs():
    from gymnax.environments.classic_control.cartpole import CartPole

    from ppo_jax.config import PPOConfig
    from ppo_jax.engine.rollout import draw_resets
    from ppo_jax.engine.train import make_context

    class SharedResets(CartPole):
        reset_ratio = 4

    env = SharedResets()
    ctx = make_context(PPOConfig(num_envs=10, num_steps=3, num_minibatches=1), env=env).rollout
    obs, _ = draw_resets(ctx, jax.random.key(0), lambda x: x)
    obs = np.asarray(obs)  # [T, N, 4]
    assert obs.shape == (3, 10, 4)
    for start in (0, 4, 8):
        group = obs[:, start : start + 4]
        assert (group == group[:, :1]).all()
    assert not np.allclose(obs[:, 0], obs[:, 4]) and not np.allclose(obs[0], obs[1])
