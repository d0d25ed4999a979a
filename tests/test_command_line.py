"""The command line as a new user meets it: `--help` defaults, one-line flag errors, progress on
long phases, folders of one kind used by another. Every case runs `ppo-jax ARGV` in-process and
checks its exit code, the number of lines it printed and what they say; none compiles a program
unless its name says so."""

from __future__ import annotations

import re

import pytest

from ppo_jax.commands.main import main


def run(capsys, *argv) -> tuple[int, list[str], list[str]]:
    """(exit code, stdout lines, stderr lines) of `ppo-jax ARGV`."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def help_default(help_lines: list[str], flag: str) -> str:
    """The 'default: X' that `--help` shows for `flag` (its help may wrap over several lines)."""
    text = " ".join(line.strip() for line in help_lines)
    match = re.search(rf"{re.escape(flag)} \S+ (?:(?! --).)*?\((?:static|traced); default: ([^,)]+)", text)
    assert match, (flag, text)
    return match.group(1)


# The shipped values, written out by hand from ppo_jax/env_defaults.py (CartPole-v1: 8 envs x 32
# steps, 150k steps, lr 2e-3; Pendulum-v1: 16 x 128, 1M steps, lr 1e-3) and PPOConfig (gamma 0.99).
@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"--num-envs": "8", "--num-steps": "32", "--total-timesteps": "150000", "--lr": "0.002"}),
        (["--env", "Pendulum-v1"], {"--num-envs": "16", "--num-steps": "128", "--lr": "0.001", "--gamma": "0.98"}),
        (["--env=Acrobot-v1"], {"--num-envs": "16", "--gae-lambda": "0.9", "--total-timesteps": "500000"}),
        (["--env", "Catch-bsuite"], {"--num-envs": "4", "--num-steps": "128", "--lr": "0.00025"}),
    ],
)
@pytest.mark.parametrize("command", ["train", "sweep", "compare"])
def test_help_shows_the_shipped_defaults_of_the_env_given(capsys, command, argv, expected):
    code, out, err = run(capsys, command, "--help", *argv)
    assert code == 0 and err == []
    for flag, value in expected.items():
        assert help_default(out, flag) == value, flag
    text = " ".join(out)
    env = argv[-1].split("=")[-1] if argv else "CartPole-v1"
    assert f"defaults shown for {env}" in text and "ppo_jax/env_defaults.py" in text


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--lr", "abc"], ["--lr", "a number", "'abc'"]),
        (["train", "--num-envs", "2.5"], ["--num-envs", "an integer", "'2.5'"]),
        (["train", "--seeds", "x"], ["--seeds", "an integer", "'x'"]),
        (["rlhf", "--algo", "dpo"], ["--algo", "grpo, ppo, rloo, reinforce", "'dpo'", "did you mean ppo?"]),
        (["rlhf", "--kl-estimator", "k4"], ["--kl-estimator", "auto, k1, k2, k3", "did you mean k"]),
        (["train", "--wandb-mode", "onlin"], ["--wandb-mode", "online, offline", "did you mean online?"]),
        (["trian"], ["unknown command 'trian'", "did you mean train?"]),
        (["sweep", "--gird", "lr=1e-3"], ["unknown flag --gird", "did you mean --grid?", "ppo-jax sweep --help"]),
        (["train", "--env"], ["--env expects a value"]),
        (["eval"], ["ppo-jax eval needs RUN_DIR"]),
    ],
)
def test_a_flag_error_is_one_line_with_the_allowed_values_and_a_close_match(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith("ppo-jax: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
