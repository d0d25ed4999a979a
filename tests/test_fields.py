"""One field declaration drives the config dataclass, its checks, the traced pytree and the flags
(`ppo_jax.fields`), for the language-model config (`RLHFConfig`) as for the RL one."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compiles

from ppo_jax.commands.parsing import CommandParser
from ppo_jax.commands.rlhf import configure_parser, main
from ppo_jax.errors import ConfigError
from ppo_jax.fields import TracedValues, check_fields, declare, fields_of
from ppo_jax.rlhf.config import FIELDS, RL_TRACED_FIELDS, RLHFConfig, RLHyperparams

# The RL-phase scalars the jitted RL phase takes as arguments (written out by hand).
RL_SCALARS = (
    "rl_lr",
    "clip_eps_low",
    "clip_eps_high",
    "kl_coef",
    "truncation_penalty",
    "gamma",
    "gae_lambda",
    "vf_coef",
    "ent_coef",
)


@pytest.fixture(scope="module")
def rlhf_parser():
    return configure_parser(CommandParser(prog="ppo-jax rlhf"))


def test_every_rlhf_field_is_one_flag_with_its_default_choices_and_help(rlhf_parser):
    actions = {a.dest: a for a in rlhf_parser._actions}
    defaults = RLHFConfig()
    args = rlhf_parser.parse_args([])
    for name, field in FIELDS.items():
        action = actions[name]
        option = "--" + name.replace("_", "-")
        negated = ["--no-" + name.replace("_", "-")] if field.kind is bool else []
        assert action.option_strings == [option, *negated]
        assert getattr(args, name) == getattr(defaults, name) == field.default
        assert field.help in action.help and f"default: {field.default}" in action.help
        assert ("traced" in action.help) == (name in RL_SCALARS), name
    assert actions["algo"].choices == ("grpo", "ppo", "rloo", "reinforce", "reinforce++")
    assert actions["kl_estimator"].choices == ("auto", "k1", "k2", "k3")
    assert actions["task"].choices is None and "or jsonl:PATH" in actions["task"].help  # jsonl:PATH too
    parsed = rlhf_parser.parse_args(["--kl-coef", "0.5", "--clip-value-loss", "true", "--rl-batch", "64"])
    assert (parsed.kl_coef, parsed.clip_value_loss, parsed.rl_batch) == (0.5, True, 64)


TRUE_FORMS = (["--{}"], ["--{}", "true"], ["--{}=yes"], ["--{}", "1"])
FALSE_FORMS = (["--no-{}"], ["--{}", "false"], ["--{}=off"], ["--{}", "0"])


@pytest.mark.parametrize("command", ["train", "sweep", "compare", "rlhf"])
def test_every_command_takes_a_boolean_field_in_each_form(command):
    """`--x`, `--x true/yes/1` set True; `--no-x`, `--x false/off/0` set False; in every command
    that takes config flags (the shipped booleans: normalize_obs for RL, remat for rlhf)."""
    from ppo_jax.commands.main import build_parser

    name = "remat" if command == "rlhf" else "normalize_obs"
    text = name.replace("_", "-")
    parser = build_parser()
    extra = ["--grid", "ent_coef=0.0,0.01"] if command == "sweep" else []
    for forms, want in ((TRUE_FORMS, True), (FALSE_FORMS, False)):
        for form in forms:
            args = parser.parse_args([command, *extra, *(part.format(text) for part in form)])
            assert getattr(args, name) is want, (command, form)
    with pytest.raises(SystemExit):
        parser.parse_args([command, *extra, f"--no-{text}", "true"])


@pytest.mark.parametrize(
    "name, allowed, refused",
    [  # bounds written out by hand from the fields' meanings
        ("clip_eps_low", (1e-6, 1.0), (0.0, 1.01, math.nan)),
        ("kl_coef", (0.0, 10.0), (-1e-9, math.inf)),
        ("gamma", (0.0, 1.0), (-0.01, 1.01)),
        ("held_out", (1e-3, 1.0), (0.0, 1.5)),
        ("vocab_size", (3, 26), (2, 27)),
        ("digits", (1, 4), (0, 5)),
        ("seed", (0, 12345), (-1,)),
        ("pretrain_steps", (0, 1), (-1,)),
        ("rl_updates", (1,), (0,)),
        ("model_dtype", ("float32", "bfloat16"), ("float16",)),
        ("model", ("gru", "hf:some/folder"), ("hf:", "lstm")),
        ("task", ("preference",), ("jsonl:", "chess")),
        ("scale_advantages", (True, False), ("maybe", 1)),
    ],
)
def test_each_declared_range_is_checked_by_the_config_and_the_cli(name, allowed, refused, capsys, no_compiles):
    for value in allowed:
        RLHFConfig(**{name: value})
    RLHFConfig(task="jsonl:data.jsonl", model="hf:some/folder")
    for value in refused:
        with pytest.raises(ConfigError) as err:
            RLHFConfig(**{name: value})
        assert err.value.field == name
    flag = "--" + name.replace("_", "-")
    with no_compiles():
        try:
            code = main([f"{flag}={refused[0]}", "--quiet"])
        except SystemExit as stop:  # refused by the flag's own type or choices
            code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and (name in err or flag in err) and len(err.strip().splitlines()) == 1, err


def test_traced_rlhf_fields_are_the_leaves_of_rl_hyperparams():
    assert RL_TRACED_FIELDS == RL_SCALARS
    config = RLHFConfig(kl_coef=0.5, rl_lr=1e-3)
    hp = config.rl_hyperparams()
    paths, _ = jax.tree_util.tree_flatten_with_path(hp)
    assert [p[0].name for p, _ in paths] == list(RL_SCALARS)
    assert all(np.asarray(v).dtype == np.float32 for _, v in paths)
    assert (float(hp.kl_coef), float(hp.rl_lr)) == (0.5, np.float32(1e-3))
    # The compile key ignores traced values; phase 1's ignores every RL field.
    assert config.static_rl_config() == RLHFConfig()
    assert RLHFConfig(algo="ppo", rl_batch=64).pretraining_config() == RLHFConfig()


def test_new_traced_values_reuse_the_compiled_program_and_vmap_over_them():
    traces = []

    @jax.jit
    def penalty(hp: RLHyperparams, kl: jax.Array) -> jax.Array:
        traces.append(1)
        return hp.kl_coef * kl + hp.ent_coef

    kl = jnp.float32(2.0)
    with count_compiles() as compiles:
        first = penalty(RLHFConfig(kl_coef=0.1).rl_hyperparams(), kl)
        second = penalty(RLHFConfig(kl_coef=0.3, ent_coef=0.01).rl_hyperparams(), kl)
    assert (len(traces), compiles[0]) == (1, 1)
    np.testing.assert_allclose([first, second], [0.2, 0.61], rtol=1e-6)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *[RLHFConfig(kl_coef=c).rl_hyperparams() for c in (0.0, 1.0, 2.0)])
    np.testing.assert_allclose(jax.vmap(penalty, in_axes=(0, None))(stacked, kl), [0.0, 2.0, 4.0], rtol=1e-6)


@dataclasses.dataclass(frozen=True)
class _Toy:
    width: int = declare(8, "layer width", low=1)
    mode: str = declare("a", "mode", choices=("a", "b"))
    rate: float = declare(0.5, "rate", traced=True, low=0.0, high=1.0, low_inclusive=False)


class _ToyTraced(TracedValues):
    """Traced fields of `_Toy`."""


def test_declare_names_each_field_once_and_checks_name_the_field_and_what_it_allows():
    fields = fields_of(_Toy)
    assert list(fields) == ["width", "mode", "rate"]
    assert [f.traced for f in fields.values()] == [False, False, True]
    check_fields(_Toy(), fields)
    cases = [
        (_Toy(width=0), "width", "must be in [1, inf], got 0"),
        (_Toy(mode="c"), "mode", "must be one of a, b, got 'c'"),
        (_Toy(rate=0.0), "rate", "must be in (0, 1], got 0.0"),
        (_Toy(width=True), "width", "must be an integer, got True"),
    ]
    for toy, name, text in cases:
        with pytest.raises(ConfigError) as err:
            check_fields(toy, fields)
        assert err.value.field == name and text in str(err.value), str(err.value)


def test_traced_values_are_an_immutable_named_pytree():
    hp = _ToyTraced(rate=np.float32(0.5), scale=np.float32(2.0))
    assert hp.replace(rate=np.float32(0.25)).rate == np.float32(0.25) and hp.rate == np.float32(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.rate = 1.0
    with pytest.raises(AttributeError, match="no traced field 'width'"):
        _ = hp.width
    doubled = jax.tree.map(lambda v: v * 2, hp)
    assert type(doubled) is _ToyTraced and (doubled.rate, doubled.scale) == (1.0, 4.0)


# --- the RL config: the same declarations --------------------------------------------------

PPO_TRACED = (
    "lr",
    "gamma",
    "gae_lambda",
    "clip_eps",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "adam_eps",
    "init_log_std",
)


def test_ppo_hyperparams_are_the_traced_declarations_then_the_parts_own():
    from ppo_jax.config import FIELDS as PPO_FIELDS
    from ppo_jax.config import TRACED_FIELDS, default_config

    assert TRACED_FIELDS == PPO_TRACED
    assert all(PPO_FIELDS[n].traced == (n in PPO_TRACED) for n in PPO_FIELDS)
    config = default_config("CartPole-v1", objective="kl_penalty", ent_coef=0.02, kl_coef=0.5)
    hparams = config.hyperparams()
    paths, _ = jax.tree_util.tree_flatten_with_path(hparams)
    assert [p[0].name for p, _ in paths] == [*PPO_TRACED, "kl_coef", "kl_target"]
    assert (float(hparams.ent_coef), float(hparams.kl_coef)) == (np.float32(0.02), 0.5)
    assert set(hparams.extra) == {"kl_coef", "kl_target"}
    traces = []

    @jax.jit
    def bonus(hp):
        traces.append(1)
        return hp.ent_coef + hp.kl_coef

    with count_compiles() as compiles:
        values = [float(bonus(config.replace(ent_coef=c, kl_coef=2 * c).hyperparams())) for c in (0.1, 0.2)]
    assert (len(traces), compiles[0]) == (1, 1)
    np.testing.assert_allclose(values, [0.3, 0.6], rtol=1e-6)


def test_train_flags_are_read_off_the_declarations():
    from ppo_jax.commands.common import add_config_flags
    from ppo_jax.config import FIELDS as PPO_FIELDS

    parser = CommandParser(prog="ppo-jax train")
    add_config_flags(parser, "not-an-env")  # PPOConfig's own defaults
    actions = {a.dest: a for a in parser._actions}
    for name, field in PPO_FIELDS.items():
        text = actions[name].help
        assert text.startswith(field.help.replace("%", "%%")), name
        assert ("(traced;" in text) == field.traced and ("(static;" in text) == (not field.traced), name
    assert "(traced; default: 0.01)" in actions["ent_coef"].help
    assert "(traced; default: 1.0)" in actions["kl_coef"].help  # kl_penalty's own field
