"""The command line as a new user meets it: `--help` defaults, one-line flag errors, progress on
long phases, folders of one kind used by another. Every case runs `ppo-jax ARGV` in-process and
checks its exit code, the number of lines it printed and what they say; none compiles a program
unless its name says so."""

from __future__ import annotations

import io
import re

import numpy as np
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
# steps, 150k steps, lr 2e-3; Pendulum-v1: 16 x 128, 1M steps, lr 3e-4, ReLU) and PPOConfig (gamma 0.99).
@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"--num-envs": "8", "--num-steps": "32", "--total-timesteps": "150000", "--lr": "0.002"}),
        (
            ["--env", "Pendulum-v1"],
            {"--num-envs": "16", "--num-steps": "128", "--lr": "0.0003", "--activation": "relu"},
        ),
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


class Clock:
    """A stand-in for time.perf_counter that the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_pause_does_not_make_the_eta_jump(monkeypatch):
    from ppo_jax.commands import progress

    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    stream = io.StringIO()
    line = progress.ProgressLine(1_000_000, stream, clock=clock)
    steps = 0
    for chunk in range(3):  # 3 chunks of 20 reports, 1000 steps every 0.1 s: 10,000 steps/s
        for _ in range(20):
            clock.now += 0.1
            steps += 1000
            line.report(steps, "x")
        clock.now += [6.0, 12.0, 0.0][chunk]  # a checkpoint save, then a compile of a shorter last chunk
    shown = [row for row in stream.getvalue().splitlines() if "ETA" in row]
    done = [float(row.split("/")[0].strip().rstrip("k")) * 1000 for row in shown]
    assert max(done) > 40_000, stream.getvalue()  # a line after each pause
    for row, steps in zip(shown, done, strict=True):
        # by hand: every interval without a pause moved 1000 steps in 0.1 s
        assert "10,000 steps/s" in row and f"ETA {progress.duration((1e6 - steps) / 10_000)}" in row, row


def test_the_sweep_line_counts_the_runs_training_together_and_one_configuration(capsys):
    from ppo_jax.commands.progress import SweepProgressBar
    from ppo_jax.runtime.sweep_results import SweepProgress

    stream = io.StringIO()
    bar = SweepProgressBar(stream)
    for u in (1, 2):
        metrics = {"episode_return": np.zeros(48)}
        bar(SweepProgress(0, 48, 48 * u, 48 * 10, 48 * u * 256, 48 * 10 * 256, 0, 1, metrics))
    bar.stop()
    text = stream.getvalue()
    assert "48 runs at once" in text and "runs 0/48" not in text, text
    assert text.splitlines()[0] == "compiling one program ..."


def test_waiting_says_what_is_under_way_and_stops():
    from ppo_jax.commands.progress import Waiting

    stream = io.StringIO()
    waiting = Waiting("compiling 5 programs", stream, every=3600)
    waiting.stop()
    waiting.stop()  # twice is harmless
    assert stream.getvalue().splitlines() == ["compiling 5 programs ..."]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "--quiet", "--seeds", "0"], ["seeds: must be a positive integer"]),
        (["eval", "{tmp}/missing", "--quiet"], ["does not exist"]),
        (["train", "--quiet", "--keep", "0"], ["keep"]),
        (["sweep", "--quiet"], ["the sweep is empty"]),
        (["rlhf", "--quiet", "--seeds", "0"], ["seeds: must be a positive integer"]),
    ],
)
def test_every_command_accepts_quiet(capsys, tmp_path, argv, words):
    code, out, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert code == 2 and len(err) == 1, err
    for word in words:
        assert word in err[0], (word, err[0])


def test_compare_png_legend_sits_beside_the_curves(tmp_path, monkeypatch):
    from ppo_jax.runtime import plots
    from ppo_jax.runtime.compare import ObjectiveResult

    figures = []
    monkeypatch.setattr(plots, "save", lambda plt, fig, path: figures.append(fig))
    steps = np.arange(1, 51) * 256.0
    results = [
        ObjectiveResult(
            name, None, steps, np.linspace(lo, hi, 50)[:, None] + np.zeros((50, 4)), *[np.zeros(4)], 0, 0, 0, 0, 0, 0
        )
        for name, lo, hi in (("clip", 400, 500), ("a2c", 20, 480), ("trpo", 490, 10))
    ]
    plots.plot_compare(tmp_path / "compare.png", results, "CartPole-v1")
    fig = figures[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1, (legend, axes)  # no curve can be hidden by it


def test_eval_render_checks_its_packages_before_evaluating(capsys, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pygame" else real(name, *a))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"env": "CartPole-v1", "seeds": [0]}')  # no checkpoint: nothing to evaluate
    code, out, err = run(capsys, "eval", run_dir, "--render", tmp_path / "episode.gif")
    assert code == 2 and out == [] and len(err) == 1, err
    assert "pygame" in err[0] and "pip install 'ppo_jax[render]'" in err[0] and "CartPole-v1" in err[0]


def test_the_sweep_header_counts_in_the_singular(capsys, tmp_path, monkeypatch):
    from ppo_jax.runtime import sweeps

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # before anything compiles

    monkeypatch.setattr(sweeps, "run_sweep", stop)
    argv = ["sweep", "--grid", "lr=1e-3", "--seeds", "1", "--num-envs", "2", "--num-steps", "16"]
    code, out, err = run(capsys, *argv, "--total-timesteps", "64", "--out", tmp_path / "s", "--quiet")
    assert code == 130 and len(out) == 1, out
    assert out[0].startswith("sweeping CartPole-v1: 1 configuration x 1 seed = 1 run x 64 steps (one batch)"), out


def write_folder(path, *names) -> str:
    """A folder holding the named entries (a name ending in / is a folder), as a command left it."""
    path.mkdir(parents=True)
    for name in names:
        (path / name).mkdir() if name.endswith("/") else (path / name).write_text("{}")
    return str(path)


TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps", "64"]


@pytest.mark.parametrize(
    "argv, held, words",
    [
        (["train", *TINY, "--quiet"], ("sweep.json", "runs/"), ["holds a sweep (ppo-jax sweep: sweep.json)"]),
        (["train", *TINY, "--overwrite"], ("sweep.json",), ["holds a sweep", "not a training run"]),
        (["train", *TINY], ("compare.json", "compare.png"), ["holds an objective comparison (ppo-jax compare"]),
        (["sweep", "--grid", "lr=1e-3", *TINY], ("config.json", "summary.json", "checkpoints/"), ["a training run"]),
        (["compare", *TINY], ("config.json", "metrics.csv"), ["holds a training run (ppo-jax train: metrics.csv)"]),
        (["compare", *TINY, "--overwrite"], ("sweep.json",), ["holds a sweep", "not an objective comparison"]),
        (["rlhf"], ("summary.json", "policy-seed0.npz"), ["holds a training run", "not a language-model run"]),
    ],
)
def test_a_folder_of_one_kind_is_refused_by_another_command(capsys, tmp_path, argv, held, words):
    folder = write_folder(tmp_path / "folder", *held)
    before = sorted(p.name for p in (tmp_path / "folder").iterdir())
    code, out, err = run(capsys, *argv, "--out", folder)
    assert code == 2 and out == [] and len(err) == 1, (out, err)
    assert err[0].startswith(f"ppo-jax: error: out: {folder} holds ") and err[0].endswith("choose another --out")
    for word in words:
        assert word in err[0], (word, err[0])
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == before  # nothing written or deleted


@pytest.mark.parametrize("held", [(), ("sweep.json",), ("rlhf.json", "config.json")])
@pytest.mark.parametrize("argv", [["eval"], ["train", "--resume"]])
def test_not_a_run_folder_is_exit_code_2_for_every_command(capsys, tmp_path, argv, held):
    folder = write_folder(tmp_path / "folder", *held)
    code, out, err = run(capsys, *argv, folder)
    assert code == 2 and len(err) == 1 and "ppo-jax: error: " in err[0], err
    assert ("holds no ppo_jax run" if not held else "not a training run") in err[0], err


def test_the_tensorboard_extra_brings_the_command_the_readme_runs():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "pip install -e '.[tensorboard]'`, then `tensorboard --logdir runs`" in readme
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorboard"]
    names = {re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower() for requirement in extra}
    assert {"tensorboard", "tensorboardx"} <= names  # the command `tensorboard` comes with the package tensorboard


def test_wandb_going_offline_by_itself_says_so_in_one_line(capsys, monkeypatch):
    pytest.importorskip("wandb")
    from ppo_jax.runtime import loggers

    monkeypatch.setattr(loggers, "has_wandb_key", lambda: False)
    code, out, err = run(capsys, "train", "--wandb", "--keep", "0")  # refused after the flags are read
    assert code == 2 and len(err) == 1 and "keep" in err[0]
    assert len(out) == 1 and out[0].startswith("W&B: no API key is set up, so runs are logged offline"), out
    code, out, err = run(capsys, "train", "--wandb", "--wandb-mode", "offline", "--keep", "0")
    assert code == 2 and out == []  # asked for: nothing to say


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_docs_name_the_defaults_the_rlhf_command_uses():
    from ppo_jax.rlhf.config import RLHFConfig

    defaults = RLHFConfig()
    rows = [line for line in (ROOT / "docs" / "llm.md").read_text().splitlines() if "(default)" in line]
    marked = {}
    for row in rows:
        flag = re.match(r"\| `--([\w-]+)` \|", row)
        value = re.search(r"`([\w-]+)` \(default\)", row)
        if flag and value:
            marked[flag.group(1).replace("-", "_")] = value.group(1)
    assert "kl_estimator" in marked and "loss_aggregation" in marked, marked
    for name, value in marked.items():
        assert value == str(getattr(defaults, name)), (name, value)


def test_readme_rlhf_example_describes_the_default_task():
    from ppo_jax.rlhf.config import RLHFConfig

    (line,) = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("ppo-jax rlhf --algo ppo ")]
    comment = line.split("#", 1)[1]
    assert RLHFConfig().task == "arithmetic" and "reward model" not in comment, comment
    assert "arithmetic" in comment
