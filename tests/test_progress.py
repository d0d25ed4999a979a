"""Progress between chunks: the run driver runs one compiled chunk program in chunks of any
length and reports progress from the host, so a run's results do not depend on whether anyone
watches it, checkpoints still fall on their interval, and the progress line's ETA stays put
while a checkpoint is saved."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from ppo_jax.commands.progress import ProgressLine
from ppo_jax.config import PPOConfig
from ppo_jax.runtime.driver import run

TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=1, total_timesteps=32 * 40)  # 40 updates


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def watched_and_quiet(tmp_path_factory):
    """The same 2-seed run with a progress callback (every 3rd update) and without one, the
    second with checkpoints every 7 updates."""
    root = tmp_path_factory.mktemp("progress")
    reports, events = [], []  # the callback's reports; both reports and notices, in order

    def callback(update, metrics):
        reports.append((np.array(update), {k: np.array(v) for k, v in metrics.items()}))
        events.append(("report", int(update[0])))

    def notify(kind, message):
        events.append((kind, message))

    common = dict(seeds=2, handle_signals=False)
    watched = run(PPOConfig(**TINY), out=root / "watched", callback=callback, callback_every=3, notify=notify, **common)
    quiet = run(PPOConfig(**TINY), out=root / "quiet", checkpoint_every=7, **common)
    return root, reports, watched, quiet, events


def test_results_are_bit_identical_with_and_without_progress(watched_and_quiet):
    root, _, watched, quiet, _ = watched_and_quiet
    assert watched["params_sha256"] == quiet["params_sha256"]
    assert (root / "watched" / "metrics.csv").read_text() == (root / "quiet" / "metrics.csv").read_text()


def test_progress_arrives_for_every_third_update_and_the_last_with_that_update_s_metrics(watched_and_quiet):
    root, reports, _, _, _ = watched_and_quiet
    updates = [update.tolist() for update, _ in reports]
    assert updates == [[u, u] for u in [*range(3, 40, 3), 40]]
    rows = _rows(root / "watched" / "metrics.csv")  # one row per update and seed
    for update, metrics in reports:
        u = int(update[0])
        for s, seed in enumerate((0, 1)):
            (row,) = [r for r in rows if int(r["update"]) == u and int(r["seed"]) == seed]
            assert float(row["env_steps"]) == metrics["env_steps"][s] == u * 32
            assert float(row["policy_loss"]) == pytest.approx(float(metrics["policy_loss"][s]), rel=1e-5)


def test_a_report_s_episode_statistics_cover_every_update_since_the_previous_report(watched_and_quiet):
    """episodes, episode_return and episode_length of a report: the episodes that ended in the
    updates since the previous report, their return and length weighted by episode (a NumPy
    loop over metrics.csv's rows), not only those of the reported update."""
    root, reports, _, _, _ = watched_and_quiet
    rows = _rows(root / "watched" / "metrics.csv")
    previous = 0
    for update, metrics in reports:
        u = int(update[0])
        for s, seed in enumerate((0, 1)):
            window = [r for r in rows if previous < int(r["update"]) <= u and int(r["seed"]) == seed]
            count = sum(float(r["episodes"]) for r in window)
            assert float(metrics["episodes"][s]) == count
            for name in ("episode_return", "episode_length"):
                total = sum(float(r[name]) * float(r["episodes"]) for r in window if float(r["episodes"]) > 0)
                want = total / count if count else math.nan
                assert float(metrics[name][s]) == pytest.approx(want, rel=1e-5, nan_ok=True), (u, name)
        previous = u
    assert any(float(r["episodes"]) == 0 for r in rows)  # some updates end no episode: windows matter
    seed0 = sum(float(r["episodes"]) for r in rows if r["seed"] == "0")
    assert sum(float(m["episodes"][0]) for _, m in reports) == seed0  # every episode in one report


def test_the_running_notice_comes_once_before_the_first_report_and_names_its_update(watched_and_quiet):
    _, _, _, _, events = watched_and_quiet
    running = [(i, m) for i, (k, m) in enumerate(events) if k == "running"]
    assert len(running) == 1, events
    (index, message), kinds = running[0], [k for k, _ in events]
    assert index < kinds.index("report")
    seconds = float(message.split("compiled in ")[1].split(" s;")[0])
    assert seconds > 0 and message.endswith("training to the first report at update 3 of 40"), message


@pytest.mark.parametrize("done, first", [(0, 4), (3, 4), (5, 8), (8, 10), (9, 10)])
def test_the_running_notice_of_a_resumed_run_names_the_next_report(done, first):
    """By hand: reports fall on multiples of 4 and on the last update (10)."""
    from types import SimpleNamespace

    from ppo_jax.runtime.executor import Chunks, _running_message

    plan = SimpleNamespace(config=SimpleNamespace(num_updates=10), ctx=SimpleNamespace(callback_every=4))
    chunks = Chunks()
    chunks.timing["compile"] = 12.34
    assert (
        _running_message(plan, chunks, done)
        == f"compiled in 12.3 s; training to the first report at update {first} of 10"
    )


def test_the_train_line_says_training_once_the_program_is_ready():
    from ppo_jax.commands.progress import TrainProgress

    stream = io.StringIO()
    progress = TrainProgress(stream)
    progress.expect(64, 2)
    progress.compiling()
    progress.running("compiled in 3.0 s; training to the first report at update 2 of 4")
    progress(np.array([2, 2]), {"env_steps": np.array([32, 32]), "episode_return": np.array([1.0, 2.0])})
    progress.stop()
    assert stream.getvalue().splitlines() == [
        "compiling the training program ...",
        "compiled in 3.0 s; training to the first report at update 2 of 4 ...",
    ]


def test_checkpoints_fall_on_the_interval(watched_and_quiet):
    root, _, _, quiet, _ = watched_and_quiet
    assert sorted(int(p.name) for p in (root / "quiet" / "checkpoints").iterdir()) == [7, 14, 21, 28, 35, 40]
    assert quiet["checkpoints_saved"] == 6


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_does_not_jump_while_a_checkpoint_is_saved():
    """1,000 steps per 0.25 s chunk (4,000 steps/s), then a 3 s pause (a checkpoint) before the
    next chunk: the rate and the ETA are those of the steady chunks."""
    clock = _Clock()
    line = ProgressLine(100_000, io.StringIO(), clock=clock)
    steps = 0
    for _ in range(10):
        steps += 1000
        line.report(steps, "")
        clock.now += 0.25
    assert line.rate() == pytest.approx(4000.0)
    assert line.eta() == pytest.approx((100_000 - 10_000) / 4000)
    clock.now += 3.0  # saving
    steps += 1000
    line.report(steps, "")
    assert line.rate() == pytest.approx(4000.0)
    assert line.eta() == pytest.approx((100_000 - 11_000) / 4000)


def test_reports_of_one_chunk_count_as_one_interval():
    """A chunk's reports arrive together at its end: the rate is that of the chunks."""
    clock = _Clock()
    line = ProgressLine(1_000_000, io.StringIO(), clock=clock)
    steps = 0
    for _ in range(5):
        for _ in range(4):  # four reported updates of 250 steps, microseconds apart
            steps += 250
            line.report(steps, "")
            clock.now += 1e-5
        clock.now += 0.5 - 4e-5
    assert line.rate() == pytest.approx(2000.0, rel=1e-3)
    assert math.isnan(ProgressLine(10, io.StringIO()).eta())


def test_a_chunk_program_equals_the_scan_of_the_same_updates():
    """`run_chunk` of 5 of up to 8 updates is `run_updates` of 5, bit for bit; its rows from 5 on
    are zero."""
    import functools

    import jax

    from ppo_jax.engine.train import broadcast_hparams, make_context, run_chunk, run_updates
    from ppo_jax.runtime.runners import init_runs

    config = PPOConfig(**TINY)
    ctx = make_context(config)
    hparams = broadcast_hparams(config.hyperparams(), 2)
    state = jax.jit(functools.partial(init_runs, ctx))(np.asarray([0, 1], np.uint32), hparams)
    scanned, scan_metrics = jax.jit(functools.partial(run_updates, ctx, num_updates=5, batched=True))(state, hparams)
    chunked, rows = jax.jit(functools.partial(run_chunk, ctx, length=8, batched=True))(state, hparams, np.int32(5))
    for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(chunked.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name, value in scan_metrics.items():
        np.testing.assert_array_equal(np.asarray(rows[name])[:5], np.asarray(value))
        assert not np.asarray(rows[name])[5:].any()
