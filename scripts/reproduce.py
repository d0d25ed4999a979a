"""Reproduce the results table: every row trains the shipped default with the real command line
and evaluates it, so the script keeps working when the package's internals change.

    python scripts/reproduce.py                          # every row at its budget
    python scripts/reproduce.py --envs CartPole-v1,Acrobot-v1
    python scripts/reproduce.py --budget-scale 0.1       # a reduced version (docs/results/scale-0.1/)

Per row: `ppo-jax train --env E --seeds N --seed S --total-timesteps T --out DIR --quiet`, then
`ppo-jax eval DIR --episodes 100` (deterministic policy), and for the rows marked so, rejax 0.1.3
with the same config, budget and seeds in its own virtual environment. Writes
docs/results/<env>.json (per seed: training and eval return; the config; the commit),
docs/results/<env>.png (learning curves) and docs/results/README.md (the table). A row whose json
is complete is skipped; a run folder left by an interrupted row is resumed from its checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_lib  # noqa: E402
from bench.peers import default_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BLINES = "RobertTLange/gymnax-blines agents/{env}/{file}"
SB3_ZOO = "DLR-RM/rl-baselines3-zoo benchmark.md"
# gymnax-blines' train.py: one run (seed 0); `log_return` is the mean of 164 episodes of the stochastic
# policy at each evaluation, `log_steps` the env steps then; gymnax < 1.0 (a time-limit cut is a done).
BLINES_PPO = "one run (seed 0), mean of 164 episodes of the stochastic policy at its last logged step, gymnax < 1.0"
BLINES_ES = "one run (seed 0), mean of 164 episodes at its last logged step, env steps of all population members"
SB3 = "one run, deterministic policy over about 150k evaluation steps, Gym's version of the env"


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published return: the algorithm, the env steps it trained for, the file it is read from."""

    algorithm: str
    value: float
    budget: int  # env steps of the run (num_train_steps of its config; for ES, all population rollouts)
    source: str  # the file holding the number (the logged curve, not a README table)
    conditions: str  # seeds, evaluation protocol, env version

    def record(self) -> dict[str, Any]:
        """The record's form: `return` and `budget` as results_lib reads them, the rest as written."""
        return {"return": self.value, "budget": self.budget, **dataclasses.asdict(self)}


def blines_ppo(env: str, value: float, budget: int, file: str = "ppo.pkl", note: str = "") -> Anchor:
    """A gymnax-blines PPO run: `ppo.pkl` trained with agents/<env>/ppo.yaml, `ppo0.001.pkl` and
    `ppo0.0001.pkl` the same config at a constant lr 1e-3 / 1e-4 (its exec.sh)."""
    lr = {"ppo0.001.pkl": "PPO, lr 1e-3", "ppo0.0001.pkl": "PPO, lr 1e-4"}
    conditions = BLINES_PPO + (f"; {note}" if note else "")
    return Anchor(lr.get(file, "PPO"), value, budget, BLINES.format(env=env, file=file), conditions)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: the published results it is compared with and how it is run."""

    env: str
    ppo: Anchor | None  # the best published PPO return (None: none published)
    budget: int  # env steps per seed of this row at --budget-scale 1
    others: tuple[Anchor, ...] = ()  # the best published returns of other algorithms, where known
    rejax: bool = False  # also run rejax 0.1.3 at the same config, budget and seeds
    checkpoint_every: int = 0  # updates between checkpoints (long rows, so that they resume)
    flags: tuple[str, ...] = ()  # train flags on top of the shipped default (a suite's published PPO config)
    flags_source: str = ""  # the file the flags are read from


def _sb3(algorithm: str, env: str, value: float, budget: int) -> Anchor:
    return Anchor(algorithm, value, budget, SB3_ZOO, f"{SB3} ({env})")


def _es(env: str, name: str, value: float, budget: int) -> Anchor:
    """A gymnax-blines evolution-strategy run (`name` is the strategy: OpenES, SimpleGA)."""
    return Anchor(name, value, budget, BLINES.format(env=env, file="es.pkl"), BLINES_ES)


# Navix's PPO baseline (epignatelli/navix baselines/rejax/configs/navix_<task>_1m.yaml, run with rejax's PPO:
# constant lr, 2 x 64 hidden units): the same `ppo:` block for DoorKey-8x8 and Empty-16x16, 2^20 steps.
NAVIX_PPO = (
    "--num-envs", "16", "--num-steps", "128", "--num-epochs", "2", "--num-minibatches", "1", "--lr", "3e-4",
    "--no-anneal-lr", "--max-grad-norm", "1", "--gamma", "0.95", "--gae-lambda", "0.9", "--clip-eps", "0.2",
    "--ent-coef", "0.01", "--vf-coef", "0.5", "--activation", "tanh", "--hidden-sizes", "64,64",
)  # fmt: skip
NAVIX_SOURCE = "epignatelli/navix baselines/rejax/configs/navix_{}_1m.yaml (ppo block)"
NAVIX_BUDGET = 1_048_576
NAVIX_RESULTS = "epignatelli/navix@250d46e baselines/rejax/results/navix_Navix-{}-v0_ppo_5_0_{}.json (last `return`)"
NAVIX_CONDITIONS = (
    "rejax's PPO (its pyproject.toml pins rejax 613bd7a and navix 5fc4975) at the config of the flags; 5 seeds, "
    "each the mean of 20 episodes of the sampled policy, at 1,048,576 steps. The same config's earlier run in the "
    "same repo (results.bkp.2/) ended at {}"
)


def navix_ppo(task: str, stamp: str, value: float, earlier: str) -> Anchor:
    """Navix's logged PPO baseline of one task: the mean over its 5 seeds of the last evaluation."""
    return Anchor("PPO", value, NAVIX_BUDGET, NAVIX_RESULTS.format(task, stamp), NAVIX_CONDITIONS.format(earlier))


# Craftax-Classic at 1e6 steps: the shipped Craftax default is its baseline's 1e9-step config (1024 envs x 64 steps,
# 15 updates at 1e6), so the row runs a setting chosen on seeds 0-3 (sweep-records/cx-a.json: lr 1e-3 over 3e-4, 3e-3;
# cx-b.json: the default entropy 0.01 over 0.003 and 0.03).
CRAFTAX_1M = (
    "--num-envs", "64", "--num-steps", "64", "--num-minibatches", "8", "--hidden-sizes", "256,256", "--lr", "1e-3",
)  # fmt: skip
CRAFTAX_1M_SOURCE = "docs/results/sweep-records/cx-a.json (seeds 0-3), on top of the shipped Craftax default"
# No Craftax-Classic PPO return at 1e6 steps is published (the Craftax README's 1M table is the full Craftax's). The
# nearest is Crafter's own scoreboard (the Python game Craftax-Classic reimplements; the reward at 1e6 steps).
CRAFTER_CONDITIONS = (
    "Crafter (danijar/crafter, the Python original of Craftax-Classic: the same achievements and health reward, "
    "64 x 64 pixel observations instead of the symbolic map); the reward at 1e6 env steps, mean (± std) over seeds, "
    "from the README's Reinforcement Learning scoreboard (the runs are scores/crafter_reward-ppo.json)"
)
CRAFTER_PPO = (
    Anchor("Stable-Baselines3 PPO on Crafter, pixels", 4.2, 1_000_000, "danijar/crafter README.md", CRAFTER_CONDITIONS),
    Anchor("PPO with a ResNet on Crafter, pixels", 10.3, 1_000_000, "danijar/crafter README.md", CRAFTER_CONDITIONS),
)

# Jumanji's published agent is A2C (instadeepai/jumanji jumanji/training/configs/env/game_2048.yaml: 32 envs x 50
# steps, 100 x 600 updates = 9.6e7 env steps, lr 2e-4, a conv torso); its returns are plotted in the paper (arXiv
# 2306.09884), not written to a file, so the row has no anchor. It runs the shipped Game2048 default (1e7 steps).
JUMANJI_2048_SOURCE = "the shipped default, chosen on seeds 0-3: docs/results/sweep-records/jg-a.json"

SUITE_ROWS: tuple[Row, ...] = (
    Row(
        "navix/Navix-DoorKey-8x8-v0",
        navix_ppo(
            "DoorKey-8x8",
            "1760716970.5776014",
            0.96,
            "0.01 (per seed 0, 0.05, 0, 0, 0). Measured here: rejax 0.1.3 with navix 0.7.4, seeds 0-1, 0.0 and 0.008",
        ),
        NAVIX_BUDGET,
        flags=NAVIX_PPO,
        flags_source=NAVIX_SOURCE.format("doorkey_8x8"),
    ),
    Row(
        "navix/Navix-Empty-16x16-v0",
        navix_ppo("Empty-16x16", "1760717036.7283344", 0.78, "0.30 (per seed 0, 0, 1.0, 0, 0.5)"),
        NAVIX_BUDGET,
        flags=NAVIX_PPO,
        flags_source=NAVIX_SOURCE.format("empty_16x16"),
    ),
    # The same task in XLand-MiniGrid, at Navix's DoorKey-8x8 config (XLand-MiniGrid publishes a recurrent
    # PPO for its own benchmarks, configs/single.yaml: 16384 envs, 1e9 steps, no MiniGrid return).
    Row(
        "xminigrid/MiniGrid-DoorKey-8x8",
        None,
        NAVIX_BUDGET,
        flags=NAVIX_PPO,
        flags_source=NAVIX_SOURCE.format("doorkey_8x8") + ", the same task in Navix",
    ),
    Row(
        "xminigrid/MiniGrid-Empty-16x16",
        None,
        NAVIX_BUDGET,
        flags=NAVIX_PPO,
        flags_source=NAVIX_SOURCE.format("empty_16x16") + ", the same task in Navix",
    ),
    Row(
        "craftax/Craftax-Classic-Symbolic-v1",
        None,
        1_000_000,
        CRAFTER_PPO,
        flags=CRAFTAX_1M,
        flags_source=CRAFTAX_1M_SOURCE,
    ),
    Row(
        "jumanji/Game2048-v1",
        None,
        10_000_000,
        checkpoint_every=500,
        flags_source=JUMANJI_2048_SOURCE,
    ),
)

_MINATAR_NOTE = "ppo.yaml at lr 5e-4 (ppo.pkl) reached {}"
# Seaquest has no gymnax-blines PPO run. pgx's MinAtar PPO example (sotetsuk/pgx examples/minatar-ppo, train.py's
# defaults) learns its own Seaquest: sticky actions (pgx's default probability 0.1), no time limit, a conv network,
# 4096 envs x 128 steps, 2e7 steps. Its logged curve is a wandb report; the repo keeps the plot, read at its end.
PGX_SEAQUEST = Anchor(
    "PPO on pgx's Seaquest: sticky actions, no time limit",
    54.0,
    20_000_000,
    "sotetsuk/pgx@079b2d7 examples/minatar-ppo/assets/seaquest.png (last point; train.py's defaults)",
    "pgx-minatar: sticky actions with probability 0.1 and no time limit (gymnax: neither sticky actions nor "
    "more than 1000 steps); a conv + 64-unit network, 4096 envs x 128 steps, 3 epochs, lr 3e-4, 2e7 steps; the "
    "mean return of 100 episodes of the sampled policy; read off the plot (x axis: wall-clock seconds), about 54",
)
# The table's data, all in one place. PPO: the best final `log_return` among gymnax-blines' PPO runs of the
# env (ppo.pkl and its lr reruns), read from the pickles; other algorithms: the best known with its budget.
ROWS: tuple[Row, ...] = (
    Row(
        "CartPole-v1", blines_ppo("CartPole-v1", 500.0, 150_000), 150_000, (_sb3("DQN", "CartPole-v1", 500.0, 50_000),)
    ),
    Row(
        "Acrobot-v1", blines_ppo("Acrobot-v1", -78.9, 500_000), 500_000, (_sb3("QR-DQN", "Acrobot-v1", -69.1, 100_000),)
    ),
    Row(
        "Pendulum-v1",
        blines_ppo("Pendulum-v1", -195.1, 1_000_000, "ppo0.001.pkl", "lr 1e-3; ppo.yaml at lr 5e-4 reached -200.6"),
        1_000_000,
        (_es("Pendulum-v1", "OpenES", -130.2, 39_600_000), _sb3("TD3", "Pendulum-v1", -151.9, 20_000)),
        rejax=True,
    ),
    Row(
        "MountainCar-v0",
        blines_ppo("MountainCar-v0", -118.3, 250_000, note="logged at 2.4e5 of num_train_steps 250000"),
        250_000,
        (_sb3("DQN", "MountainCar-v0", -100.8, 120_000),),
    ),
    Row(
        "MountainCarContinuous-v0",
        blines_ppo(
            "MountainCarContinuous-v0",
            -0.003,
            1_000_000,
            "ppo0.0001.pkl",
            "lr 1e-4, never reaches the goal; lr 1e-3 -0.02 at 1e6, ppo.pkl -0.11 at 2.2e5",
        ),
        1_000_000,
        (
            _sb3("ARS", "MountainCarContinuous-v0", 96.7, 500_000),
            _es("MountainCarContinuous-v0", "SimpleGA", 95.3, 893_600_000),
        ),
    ),
    Row(
        "Breakout-MinAtar",
        blines_ppo("Breakout-MinAtar", 43.4, 10_000_000, "ppo0.001.pkl", "lr 1e-3; " + _MINATAR_NOTE.format(22.9)),
        10_000_000,
        rejax=True,
        checkpoint_every=100,
    ),
    Row("Freeway-MinAtar", blines_ppo("Freeway-MinAtar", 58.8, 10_000_000), 10_000_000, checkpoint_every=100),
    Row(
        "SpaceInvaders-MinAtar",
        blines_ppo("SpaceInvaders-MinAtar", 131.6, 10_000_000),
        10_000_000,
        checkpoint_every=100,
    ),
    Row(
        "Asterix-MinAtar",
        blines_ppo("Asterix-MinAtar", 17.8, 10_000_000, "ppo0.001.pkl", "lr 1e-3; " + _MINATAR_NOTE.format(15.0)),
        10_000_000,
        checkpoint_every=100,
    ),
    Row("Seaquest-MinAtar", None, 10_000_000, (PGX_SEAQUEST,), checkpoint_every=100),
    *SUITE_ROWS,
)
# Every row runs at the published PPO budget with 8 seeds. A MinAtar row (8 seeds x 1e7 steps) takes minutes on
# a GPU and hours on 2 CPU cores (about 13 k env-steps/s there): `--budget-scale 0.2` runs them at 2e6 steps.
# Seaquest-MinAtar has a gymnax-blines ppo.yaml but no trained run (its exec.sh leaves it out).
DEFAULT_RESULTS = REPO / "docs" / "results"
REJAX_INSTALL = ("rejax==0.1.3", "gymnax==0.0.9", "jax==0.10.2", "jaxlib==0.10.2")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", default="", help="comma-separated env ids (default: every row)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="fraction of each row's budget (default: 1)")
    p.add_argument("--seed", type=int, default=1000, help="first seed (default 1000: not a seed any sweep used)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per row (default: 8)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per seed (default: 100)")
    p.add_argument("--results", type=Path, default=None, help="output folder (default: docs/results[/scale-X])")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "reproduce", help="run folders")
    p.add_argument("--no-rejax", action="store_true", help="skip the rejax rows' peer runs")
    p.add_argument("--redo", action="store_true", help="discard the selected rows' results and run folders first")
    p.add_argument("--rejax-seeds", type=int, default=0, help="rejax on the first N of the row's seeds (default: all)")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="rewrite the published returns of the finished rows, their plots and the table; train nothing",
    )
    p.add_argument("--rejax-venv", type=Path, default=default_cache() / "rejax")  # where benchmark.py installs it
    args = p.parse_args(argv)
    if args.results is None:
        scale = "" if args.budget_scale == 1 else f"scale-{args.budget_scale:g}"
        args.results = DEFAULT_RESULTS / scale
    return args


def selected_rows(args: argparse.Namespace) -> list[Row]:
    wanted = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = sorted(set(wanted) - {r.env for r in ROWS})
    if unknown:
        sys.exit(f"unknown env(s) {', '.join(unknown)}; rows: {', '.join(r.env for r in ROWS)}")
    return [r for r in ROWS if not wanted or r.env in wanted]


def row_plan(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    """Budget, seeds and paths of `row` under the command-line options."""
    scale, seeds = args.budget_scale, args.seeds
    return {
        "budget": int(row.budget * scale),
        "scale": scale,
        "seeds": list(range(args.seed, args.seed + seeds)),
        "run_dir": args.runs / f"{results_lib.stem(row.env)}-scale{scale:g}-seed{args.seed}x{seeds}",
        "json": args.results / f"{results_lib.stem(row.env)}.json",
        "rejax": row.rejax and not args.no_rejax,
    }


def is_complete(plan: dict[str, Any]) -> bool:
    """True when the row's json exists, is complete and was made with this plan's budget and seeds."""
    if not plan["json"].is_file():
        return False
    record = json.loads(plan["json"].read_text())
    same = record.get("budget") == plan["budget"] and record.get("seeds") == plan["seeds"]
    return bool(record.get("complete")) and same and (record.get("rejax") is not None or not plan["rejax"])


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    """Run `cmd`, appending its output to `log`; exit with the log's tail if it fails."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        f.write(proc.stdout)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}")
    return proc.stdout


def fresh_train_cmd(row: Row, plan: dict[str, Any]) -> list[str]:
    """The `ppo-jax train` command line of the row (shipped defaults; only budget and seeds given)."""
    seeds = plan["seeds"]
    cmd = ["ppo-jax", "train", "--env", row.env, "--seeds", str(len(seeds)), "--seed", str(seeds[0])]
    cmd += ["--total-timesteps", str(plan["budget"]), "--out", str(plan["run_dir"]), "--quiet", *row.flags]
    if row.checkpoint_every:
        cmd += ["--checkpoint-every", str(row.checkpoint_every), "--keep", "1"]
    return cmd


def train_cmd(row: Row, plan: dict[str, Any]) -> list[str]:
    """Resume an interrupted run of the row from its checkpoints, or start it afresh."""
    run_dir = plan["run_dir"]
    if (run_dir / "checkpoints").is_dir() and not (run_dir / "summary.json").is_file():
        return ["ppo-jax", "train", "--resume", str(run_dir), "--quiet"]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return fresh_train_cmd(row, plan)


def run_ppo_jax(row: Row, plan: dict[str, Any], args: argparse.Namespace, say) -> dict[str, Any]:
    """Train (unless done) and evaluate (unless done) the row; the run's metrics and eval returns."""
    run_dir = plan["run_dir"]
    log = args.runs / f"{run_dir.name}.log"
    if not (run_dir / "summary.json").is_file():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = train_cmd(row, plan)
        if cmd[2] != "--resume":  # the commit that trains the row (the record may be written later)
            (args.runs / f"{run_dir.name}.commit").write_text(git_commit() + "\n")
        say(f"training {len(plan['seeds'])} seeds x {plan['budget']:,} steps: {' '.join(cmd)}")
        run_logged(cmd, log)
    eval_path = run_dir / "eval.json"
    if not eval_path.is_file() or json.loads(eval_path.read_text())["episodes_per_seed"] != args.episodes:
        say(f"evaluating {args.episodes} episodes per seed")
        run_logged(["ppo-jax", "eval", str(run_dir), "--episodes", str(args.episodes)], log)
    steps, returns, seeds = results_lib.read_metrics(run_dir / "metrics.csv")
    report = json.loads(eval_path.read_text())
    return {
        "seeds": seeds,
        "steps": steps,
        "returns": returns,
        "eval": report["return_mean_per_seed"],
        "eval_episodes_unfinished": report.get("episodes_unfinished"),  # older eval.json files lack it
        "eval_length_mean": report.get("length_mean"),
    }


def rejax_python(venv: Path) -> Path:
    """The python of rejax's virtual environment, created (pinned versions) on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REJAX_INSTALL], check=True)
    return python


def run_rejax(plan: dict[str, Any], args: argparse.Namespace, say) -> dict[str, Any]:
    """rejax at the row's resolved ppo_jax config, budget and seeds (cached in the run folder)."""
    import numpy as np

    cached = plan["run_dir"] / "rejax.json"
    if not cached.is_file():
        config = json.loads((plan["run_dir"] / "config.json").read_text())
        config.pop("seeds", None)
        seeds = plan["seeds"][: args.rejax_seeds or None]
        spec = {"config": config, "seeds": seeds, "eval_episodes": args.episodes}
        say(f"rejax: {len(seeds)} seeds x {config['total_timesteps']:,} steps")
        runner = REPO / "scripts" / "peers" / "rejax_results.py"
        out = run_logged([str(rejax_python(args.rejax_venv)), str(runner), json.dumps(spec)], args.runs / "rejax.log")
        line = next(x for x in out.splitlines() if x.startswith("RESULTS "))
        cached.write_text(line[len("RESULTS ") :])
    r = json.loads(cached.read_text())
    returns = np.array([[np.nan if v is None else v for v in row] for row in r["update_returns"]]).T
    block = results_lib.impl_summary(r["seeds"], r["env_steps"], returns, r["eval_returns"])
    return {**block, "versions": r["versions"], "mismatches": r["mismatches"], "eval_policy": r["eval_policy"]}


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "ppo_jax"], capture_output=True, text=True)
    return out.strip() + ("+dirty" if dirty.stdout.strip() else "")


def shown_path(path: Path) -> str:
    """`path` relative to the repository where it lies inside it (records name no machine's folders)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def build_record(row: Row, plan: dict[str, Any], ours: dict[str, Any], rejax: dict | None, episodes: int) -> dict:
    config = json.loads((plan["run_dir"] / "config.json").read_text())
    commit_file = plan["run_dir"].parent / f"{plan['run_dir'].name}.commit"
    commit = commit_file.read_text().strip() if commit_file.is_file() else git_commit()
    block = results_lib.impl_summary(ours["seeds"], ours["steps"], ours["returns"], ours["eval"])
    shown = {**plan, "run_dir": shown_path(plan["run_dir"])}
    return {
        "env": row.env,
        "budget": plan["budget"],
        "budget_scale": plan["scale"],
        "seeds": plan["seeds"],
        "published": row.ppo.record() if row.ppo else {"return": None, "budget": None},
        "published_other": [a.record() for a in row.others],
        "commands": [" ".join(fresh_train_cmd(row, shown)), f"ppo-jax eval {shown['run_dir']} --episodes {episodes}"],
        "flags_source": row.flags_source or None,
        "config": {k: v for k, v in config.items() if k != "seeds"},
        "commit": commit,
        "eval_policy": "deterministic (mode), frozen normalisation",
        "eval_length_mean": ours.get("eval_length_mean"),
        "eval_episodes_unfinished": ours.get("eval_episodes_unfinished"),  # still running at the step limit
        "ppo_jax": block,
        "rejax": rejax,
        "complete": True,
    }


def write_outputs(args: argparse.Namespace, row: Row, record: dict[str, Any]) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{results_lib.stem(row.env)}.json").write_text(
        json.dumps(record, indent=1, allow_nan=False) + "\n"
    )
    results_lib.plot_record(args.results / f"{results_lib.stem(row.env)}.png", record)
    write_table(args)


def write_table(args: argparse.Namespace) -> None:
    """The table of the complete records in the results folder, into its README.md (and into the
    project README when the folder is the default docs/results)."""
    records = results_lib.load_records(args.results, [r.env for r in ROWS])
    table = results_lib.markdown_table(records)
    readme = args.results / "README.md"
    if not readme.is_file():
        readme.write_text("# Results\n\n<!-- table -->\n<!-- /table -->\n")
    targets = [readme] + ([REPO / "README.md"] if args.results.resolve() == DEFAULT_RESULTS.resolve() else [])
    for path in targets:
        text = path.read_text()
        intro, _, rest = text.partition("<!-- table -->")
        outro = rest.partition("<!-- /table -->")[2]
        path.write_text(f"{intro}<!-- table -->\n{table}\n<!-- /table -->{outro}")


def refresh_anchors(args: argparse.Namespace, rows: list[Row]) -> None:
    """Rewrite the published returns of the finished records in the results folder from `ROWS`,
    and their plots (the anchors are the table's data, not a measurement)."""
    for row in rows:
        path = args.results / f"{results_lib.stem(row.env)}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        record["published"] = row.ppo.record() if row.ppo else {"return": None, "budget": None}
        record["published_other"] = [a.record() for a in row.others]
        path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        if record.get("complete"):
            results_lib.plot_record(args.results / f"{results_lib.stem(row.env)}.png", record)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = selected_rows(args)
    if args.table_only:
        refresh_anchors(args, rows)
        write_table(args)
        return 0
    start = time.perf_counter()
    for i, row in enumerate(rows, start=1):
        plan = row_plan(row, args)

        def say(msg: str, i=i, row=row) -> None:
            print(f"[{time.perf_counter() - start:7.0f} s] row {i}/{len(rows)} {row.env}: {msg}", flush=True)

        if args.redo:
            plan["json"].unlink(missing_ok=True)
            shutil.rmtree(plan["run_dir"], ignore_errors=True)
        if is_complete(plan):
            say(f"complete in {plan['json']}, skipped")
            continue
        ours = run_ppo_jax(row, plan, args, say)
        rejax = run_rejax(plan, args, say) if plan["rejax"] else None
        record = build_record(row, plan, ours, rejax, args.episodes)
        write_outputs(args, row, record)
        e = record["ppo_jax"]["eval"]
        published = "none" if row.ppo is None else f"{row.ppo.value:g}"
        say(f"eval IQM {e['iqm']:.1f} [{e['ci_low']:.1f}, {e['ci_high']:.1f}] (published {published})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
