"""Bad input is refused with a `ConfigError` naming the culprit, before anything is compiled."""

from __future__ import annotations

import math

import pytest

import ppo_jax
from ppo_jax import ConfigError, PPOConfig

# (field, value): every value is invalid for its field on top of the default PPOConfig.
BAD_FIELDS = [
    ("num_envs", 0),
    ("num_envs", -4),
    ("num_steps", 0),
    ("num_steps", -1),
    ("num_epochs", 0),
    ("num_minibatches", 0),
    ("num_minibatches", -2),
    ("num_minibatches", 3),  # 4 * 128 = 512 is not divisible by 3
    ("num_minibatches", 1024),  # more minibatches than samples
    ("total_timesteps", 0),
    ("total_timesteps", 255),  # less than one batch: 4 * 128 (PPOConfig), 8 * 32 (CartPole-v1's default)
    ("gamma", -0.01),
    ("gamma", 1.01),
    ("gamma", math.nan),
    ("gae_lambda", -0.5),
    ("gae_lambda", 1.5),
    ("clip_eps", 0.0),
    ("clip_eps", -0.2),
    ("ent_coef", -0.01),
    ("vf_coef", -1.0),
    ("max_grad_norm", 0.0),
    ("max_grad_norm", -0.5),
    ("adam_eps", 0.0),
    ("adam_eps", -1e-8),
    ("lr", 0.0),
    ("lr", -1e-3),
    ("lr", math.inf),
    ("activation", "sigmoid"),
    ("activation", ""),
    ("kernel_init", "xavier"),
    ("kernel_init", None),
    ("hidden_sizes", ()),
    ("hidden_sizes", (64, 0)),
    ("hidden_sizes", (64, -8)),
    ("hidden_sizes", [64, 64]),
    ("hidden_sizes", (64.0, 64)),
    ("hidden_sizes", (True, 64)),
    ("hidden_sizes", 64),
    ("num_envs", 4.0),
    ("num_envs", "4"),
    ("num_envs", True),
    ("num_steps", None),
    ("total_timesteps", 5e5),
    ("gamma", "0.99"),
    ("gamma", None),
    ("clip_eps", True),
    ("anneal_lr", "yes"),
    ("normalize_obs", 1),
    ("env", 3),
    ("seed", -1),
    ("seed", 1.5),
    ("seed", 2**31),  # seeds become uint32 keys; sweeps allow [0, 2^31) too
    ("lr", 1e39),  # finite for Python, inf in float32 on the device
    ("init_log_std", -1e39),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_invalid_field_raises_config_error_naming_it(field, value, no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        PPOConfig(**{field: value})
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize("field,value", BAD_FIELDS[:12], ids=[f"{f}={v!r}" for f, v in BAD_FIELDS[:12]])
def test_replace_and_default_config_validate_too(field, value, no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        PPOConfig().replace(**{field: value})
    assert err.value.field == field
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.default_config("CartPole-v1", **{field: value})
    assert err.value.field == field


@pytest.mark.parametrize(
    "parts,field,value",
    [
        ({"objective": "kl_penalty"}, "kl_target", 3.5e38),  # a part's traced field: float32 range
        ({"objective": "kl_penalty"}, "kl_coef", -1.0),
        ({"objective": "trpo"}, "max_kl", 0.0),
        ({"network": "gru"}, "rnn_size", 0),
        ({"network": "cnn"}, "conv_channels", (16, 0)),
        ({"objective": "reinforce"}, "reinforce_baseline", 1),
    ],
)
def test_a_parts_own_field_is_validated_like_a_built_in_one(parts, field, value, no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.default_config("CartPole-v1", **parts, **{field: value})
    assert err.value.field == field


def test_a_parts_field_without_its_part_names_the_part_that_declares_it(no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.default_config("CartPole-v1", kl_coef=0.3)
    assert err.value.field == "kl_coef" and "objective kl_penalty" in str(err.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_field_is_refused(no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        PPOConfig().replace(learning_rate=1e-3)
    assert err.value.field == "learning_rate"


def test_valid_edge_values_are_accepted():
    cfg = PPOConfig(gamma=0.0, gae_lambda=1.0, ent_coef=0.0, vf_coef=0.0, num_envs=1, num_steps=4, num_minibatches=4)
    assert cfg.minibatch_size == 1
    assert PPOConfig(gamma=1, lr=1).gamma == 1  # ints are fine where floats are expected
    assert PPOConfig(total_timesteps=512).num_updates == 1


def test_derived_sizes():
    cfg = PPOConfig(num_envs=8, num_steps=16, num_minibatches=4, total_timesteps=1000)
    assert cfg.batch_size == 128
    assert cfg.minibatch_size == 32
    assert cfg.num_updates == 7
    assert cfg.env_steps == 7 * 128


@pytest.mark.parametrize("env", ["StatelessCartPole-v1", "MemoryChain-bsuite"])
def test_recurrent_benchmark_envs_ship_gru_defaults_that_an_mlp_can_share(env, no_compiles):
    """The partially observed envs default to the gru family with whole env sequences per
    minibatch; `network="mlp"` changes nothing else (the benchmark's comparison)."""
    from ppo_jax.engine.train import make_context

    with no_compiles():
        gru = ppo_jax.default_config(env)
        mlp = ppo_jax.default_config(env, network="mlp")
        assert gru.network == "gru"
        assert gru.num_envs % gru.num_minibatches == 0
        assert gru.replace(network="mlp") == mlp
        make_context(gru)


def test_config_is_frozen():
    cfg = PPOConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name,close", [("CartPole-v2", "CartPole-v1"), ("pendulum-v1", "Pendulum-v1")])
def test_unknown_env_lists_close_matches(name, close, no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.make_env(name)
    assert err.value.field == "env"
    assert close in str(err.value)
    assert name in str(err.value)


def test_make_train_refuses_unknown_env_id(no_compiles):
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.make_train(PPOConfig(env="Cartpole-v1"))
    assert err.value.field == "env"
    assert "CartPole-v1" in str(err.value)


@pytest.mark.parametrize("env_fixture", ["dict_action_env", "matrix_action_env"])
def test_make_train_refuses_unsupported_action_space(env_fixture, request, no_compiles):
    env = request.getfixturevalue(env_fixture)
    cfg = PPOConfig(num_envs=2, num_steps=8, total_timesteps=16)
    with no_compiles(), pytest.raises(ConfigError) as err:
        ppo_jax.make_train(cfg, env=env, env_params=env.default_params)
    assert err.value.field == "env"
