"""The `ppo-jax` command: the only place that prints or writes files."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppo_jax.config import ENV_DEFAULTS, FIELDS, CheckpointError, ConfigError, PPOConfig, default_config
from ppo_jax.runtime import files as runs
from ppo_jax.runtime.cpu import compiler_options


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _typed(name: str, kind: type):
    def parse(text: str):
        try:
            if kind is tuple:
                values = tuple(int(v) for v in text.replace(" ", "").split(","))
                if not values:
                    raise ValueError
                return values
            if kind is int and not text.strip().lstrip("+-").isdigit():
                number = float(text)  # 1e6, 2.5e5: accepted when the value is a whole number
                if not number.is_integer():
                    raise ValueError
                return int(number)
            return kind(text)
        except (ValueError, OverflowError):
            want = {int: "an integer", float: "a number", tuple: "comma-separated integers, e.g. 64,64"}[kind]
            raise argparse.ArgumentTypeError(f"{_flag(name)} expects {want}, got {text!r}") from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `PPOConfig` field, generated from the dataclass (help text and defaults)."""
    base = PPOConfig()
    group = parser.add_argument_group(
        "config",
        f"every PPOConfig field; defaults shown for CartPole-v1, per-env defaults for {len(ENV_DEFAULTS)} envs",
    )
    for name, field in FIELDS.items():
        default = getattr(base, name)
        kind = {bool: bool, int: int, float: float, str: str, tuple: tuple}[type(default)]
        tag = "traced" if field.metadata["traced"] else "static"
        shown = ",".join(map(str, default)) if kind is tuple else default
        help_text = f"{field.metadata['help']} ({tag}; default: {shown})"
        if kind is bool:
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is str:
            group.add_argument(_flag(name), default=None, help=help_text, metavar="NAME" if name == "env" else None)
        else:
            group.add_argument(
                _flag(name), type=_typed(name, kind), default=None, help=help_text, metavar=kind.__name__.upper()
            )


def config_from_args(args: argparse.Namespace) -> PPOConfig:
    """Shipped defaults for `--env`, overridden by every flag given."""
    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    env = overrides.pop("env", "CartPole-v1")
    return default_config(env, **overrides)


class Progress:
    """Host callback: one live line with env steps done/total, env-steps/s and the latest return."""

    def __init__(self, total_steps: int, num_runs: int, stream=sys.stderr, min_interval: float = 0.2):
        self.total = total_steps
        self.num_runs = num_runs
        self.stream = stream
        self.live = stream.isatty()
        self.min_interval = min_interval if self.live else 5.0
        self.start: float | None = None  # time and step count at the first update: rate excludes it
        self.start_steps = 0
        self.last_print = 0.0
        self.last_return = math.nan
        self.steps = 0

    def __call__(self, update, metrics) -> None:
        now = time.perf_counter()
        steps = np.asarray(metrics["env_steps"])
        self.steps = int(steps.sum()) if steps.ndim else int(steps) * self.num_runs
        if self.start is None:
            self.start, self.start_steps = now, self.steps
        ret = np.asarray(metrics["episode_return"], np.float64)
        if np.isfinite(ret).any():
            self.last_return = float(np.nanmean(ret))
        if now - self.last_print >= self.min_interval or self.steps >= self.total:
            self.last_print = now
            self.show(now)

    def show(self, now: float) -> None:
        elapsed = now - (self.start or now)
        rate = (self.steps - self.start_steps) / elapsed if elapsed > 0 else 0.0
        line = (
            f"steps {self.steps:>12,}/{self.total:,} ({100 * self.steps / self.total:5.1f}%)"
            f" | {rate:>10,.0f} steps/s | return {self.last_return:8.2f}"
        )
        end = "\r" if self.live and self.steps < self.total else "\n"
        self.stream.write(line + end)
        self.stream.flush()


def progress_every(config: PPOConfig, reports: int = 50) -> int:
    """Updates between progress reports: about `reports` per run (each is a host round trip)."""
    return max(1, config.num_updates // reports)


def _print_err(message: str) -> None:
    sys.stderr.write(f"ppo-jax: error: {message}\n")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of JAX's multi-process runtime (named as `jax.distributed.initialize` names them)."""
    group = parser.add_argument_group(
        "across hosts",
        "start jax.distributed before any computation; without these flags JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID are read, else SLURM is detected inside an srun step",
    )
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, default=None, metavar="P", help="number of processes")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 <= I < P")
    group.add_argument(
        "--distributed-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="give up if the coordinator cannot be reached within this time (default: 300)",
    )


def start_distributed(args: argparse.Namespace) -> None:
    """Check the multi-process flags (bad input is refused before starting), then start the runtime.

    One process on a CPU-only machine gets one device per core (the run axis is padded to their
    count and sharded over them, see `ppo_jax.runtime.cpu`)."""
    from ppo_jax.runtime.cpu import split_runs_over_cores, usable_cores
    from ppo_jax.runtime.processes import initialize, resolve_processes

    processes = resolve_processes(args.coordinator_address, args.num_processes, args.process_id)
    if processes is None:
        split_runs_over_cores(usable_cores())
    initialize(processes, args.distributed_timeout)


class StopRequest:
    """SIGINT and SIGTERM handler: the first signal (Ctrl-C, or a scheduler's SIGTERM before it
    preempts a job) asks training to stop at the next chunk boundary, where it saves (a run
    without `--checkpoint-every` has none and finishes); a second one ends the process at once.

    A running XLA program cannot be interrupted from Python, so the second signal restores the
    default handler and re-raises itself rather than waiting for the program to return."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, has_boundary: bool = True):
        self.requested = False
        self.has_boundary = has_boundary
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            sys.stderr.write("\naborted without saving\n")
            sys.stderr.flush()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.has_boundary:
            sys.stderr.write(f"\n{what}: stopping at the next checkpoint boundary (again to abort without saving)\n")
        else:
            sys.stderr.write(
                f"\n{what}: this run has no checkpoint boundary before its end (train with --checkpoint-every N "
                "to be able to stop early): it finishes and saves; again to abort without saving\n"
            )

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


def _resume_setup(args: argparse.Namespace):
    """(config, seeds, run folder, updates done) of the run in `--resume DIR`, from its newest checkpoint."""
    from ppo_jax.runtime.checkpoint import RunCheckpoints, config_from_meta

    given = [_flag(n) for n in FIELDS if getattr(args, n, None) is not None]
    given += ["--seeds"] if args.seeds != 1 else []
    given += ["--out"] if args.out is not None else []
    if given:
        raise ConfigError("resume", f"a resumed run keeps its config, seeds and folder; remove {', '.join(given)}")
    run_dir = Path(args.resume)
    if not run_dir.is_dir():
        raise ConfigError("resume", f"run folder {run_dir} does not exist")
    meta = RunCheckpoints(run_dir, create=False).read_meta()
    return config_from_meta(meta), list(meta["seeds"]), runs.prepare_dir(run_dir), int(meta["update"])


def _requested_seeds(args: argparse.Namespace) -> int:
    """How many seeds `train` will run, read without starting JAX (0 if unknown)."""
    if not args.resume:
        return args.seeds or 0
    try:
        return len(json.loads((Path(args.resume) / "config.json").read_text())["seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # the resume path reports the problem itself


def cmd_train(args: argparse.Namespace) -> int:
    from ppo_jax.runtime.cpu import split_runs_over_cores

    if not getattr(args, "shard_envs", False):
        split_runs_over_cores(_requested_seeds(args))  # before JAX starts: seeds spread over the cores

    import jax

    from ppo_jax.engine.train import broadcast_hparams, describe_nonfinite, init_state, make_context, run_updates
    from ppo_jax.runtime.checkpoint import RunCheckpoints
    from ppo_jax.runtime.distributed import put_runs

    for name in ("seeds", "checkpoint_every", "keep"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(name, f"must be a positive integer, got {value}")
    if getattr(args, "shard_envs", False):
        return _train_shard_envs(args)
    if args.resume:
        config, seeds, out, saved_update = _resume_setup(args)
    else:
        config = config_from_args(args)
        seeds = seed_list(config, args.seeds)
        _refuse_used_run_dir(args.out)
        out, saved_update = None, 0
    progress = None if args.quiet else Progress(config.env_steps * len(seeds), len(seeds))
    ctx = make_context(config, callback=progress, callback_every=progress_every(config))  # errors before compiling
    if out is None:  # created once the env is known to exist
        out = runs.prepare_dir(args.out or runs.default_run_dir(config.env))
    # from here on, Ctrl-C or SIGTERM (also while compiling) asks for a stop at the next boundary
    chunk = min(args.checkpoint_every or config.num_updates, config.num_updates)
    with StopRequest(has_boundary=chunk < config.num_updates - saved_update) as stop:
        store = RunCheckpoints(out, keep=args.keep)
        mesh = _seed_mesh(len(seeds))  # None: one device
        place = (lambda tree: tree) if mesh is None else functools.partial(put_runs, mesh=mesh)
        hparams = place(broadcast_hparams(config.hyperparams(), len(seeds)))
        if args.resume:
            saved, _ = store.restore(ctx)
            state, done_metrics = place(saved.state), {k: [np.asarray(v)] for k, v in saved.metrics.items()}
            print(f"resuming {out} at update {int(np.max(state.update))}/{config.num_updates}")
        else:
            runs.write_json(out / "config.json", {**config.to_dict(), "seeds": seeds})
            keys = place(jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32)))
            # placed like a restored state: the program is compiled for these shardings and then fed its
            # own output, whose every leaf is split by seed
            state = place(jax.jit(jax.vmap(functools.partial(init_state, ctx)))(keys, hparams))
            done_metrics = {}
            print(f"training {config.env}: {len(seeds)} seed(s) x {config.env_steps:,} steps -> {out}")

        compiled: dict[int, Any] = {}
        timing = {"compile": 0.0, "run": 0.0, "save": 0.0, "saves": 0}
        start_update = done = int(np.max(np.asarray(state.update)))

        def program(n: int):
            if n not in compiled:
                t0 = time.perf_counter()
                fn = jax.jit(functools.partial(run_updates, ctx, num_updates=n, batched=True))
                compiled[n] = fn.lower(state, hparams).compile(compiler_options=compiler_options())
                timing["compile"] += time.perf_counter() - t0
            return compiled[n]

        def save():
            t0 = time.perf_counter()
            store.save(ctx, seeds, state, hparams, {k: np.concatenate(v) for k, v in done_metrics.items()})
            timing["save"] += time.perf_counter() - t0
            timing["saves"] += 1

        if args.resume and done >= config.num_updates and (out / "summary.json").exists():
            print(f"{out} has finished all {config.num_updates} updates; no updates were left to run")
            store.close()
            return 0
        while done < config.num_updates:
            # chunks end on multiples of the checkpoint interval, also after resuming elsewhere
            n = min(chunk - done % chunk, config.num_updates - done)
            fn = program(n)
            t0 = time.perf_counter()
            new_state, metrics = jax.block_until_ready(fn(state, hparams))
            timing["run"] += time.perf_counter() - t0
            bad = np.argwhere(np.asarray(metrics["nonfinite"]) > 0)
            if bad.size:
                u, s = bad[0]
                code = int(np.asarray(metrics["nonfinite"])[u, s])
                last = store.latest_update()
                keep = f"the last good checkpoint (update {last}) is kept" if last else "no checkpoint was written"
                raise NonFiniteError(
                    f"non-finite {describe_nonfinite(code)} at update {done + u + 1} (seed {seeds[s]}); {keep}"
                )
            state, done = new_state, done + n
            for k, v in metrics.items():
                done_metrics.setdefault(k, []).append(np.asarray(v))
            if args.checkpoint_every and (done % args.checkpoint_every == 0 or done == config.num_updates):
                save()
            if stop.requested and done < config.num_updates:
                if store.latest_update() != done:
                    save()
                print(f"stopped at update {done}/{config.num_updates}; resume with: ppo-jax train --resume {out}")
                return 130
    if store.latest_update() != done:
        save()
    store.close()
    metrics = {k: np.concatenate(v) for k, v in done_metrics.items()}
    summary = _summarize(config, seeds, state, metrics, timing, (done - start_update) * config.batch_size * len(seeds))
    summary.update(processes=jax.process_count(), devices=1 if mesh is None else mesh.size)
    _export_policies(ctx, config, seeds, state, out)
    runs.write_metrics_csv(out / "metrics.csv", metrics, seeds)
    runs.write_json(out / "summary.json", summary)
    runs.plot_curve(out / "curve.png", metrics["env_steps"], metrics["episode_return"], seeds, config.env)
    spread = f" ± {summary['final_return_std']:.1f} (min {summary['final_return_min']:.1f})" if len(seeds) > 1 else ""
    print(
        f"final return {summary['final_return_mean']:.2f}{spread} | compile {timing['compile']:.1f} s | "
        f"{_speed_text(summary)}\nrun folder: {out}"
    )
    return 0


def _train_shard_envs(args: argparse.Namespace) -> int:
    """`ppo-jax train --shard-envs`: one run, its environments split over all devices (see
    `distributed.make_env_sharding` for the semantics). No checkpoints."""
    import jax

    from ppo_jax.engine.train import describe_nonfinite, make_context
    from ppo_jax.runtime.distributed import init_env_sharded, make_env_sharding, place_env_sharded, run_env_sharded

    for flag, given in (
        ("seeds", args.seeds != 1),
        ("resume", args.resume),
        ("checkpoint_every", args.checkpoint_every),
        ("keep", args.keep),
    ):
        if given:
            raise ConfigError("shard_envs", f"--shard-envs trains one run without checkpoints; remove {_flag(flag)}")
    config = config_from_args(args)
    progress = None if args.quiet else Progress(config.env_steps, 1)
    es = make_env_sharding(make_context(config, callback=progress, callback_every=progress_every(config)))
    _refuse_used_run_dir(args.out)
    out = runs.prepare_dir(args.out or runs.default_run_dir(config.env))
    seeds = [config.seed]
    runs.write_json(out / "config.json", {**config.to_dict(), "seeds": seeds, "shard_envs": True})
    print(
        f"training {config.env}: {config.num_envs} envs over {es.mesh.size} device(s) x "
        f"{config.env_steps:,} steps -> {out}"
    )
    hparams = config.hyperparams()
    t0 = time.perf_counter()
    state = place_env_sharded(
        es, jax.jit(functools.partial(init_env_sharded, es))(jax.random.key(config.seed), hparams)
    )
    program = jax.jit(functools.partial(run_env_sharded, es, num_updates=config.num_updates))
    fn = program.lower(state, hparams).compile(compiler_options=compiler_options())
    timing = {"compile": time.perf_counter() - t0, "run": 0.0, "save": 0.0, "saves": 0}
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(fn(state, hparams))
    timing["run"] = time.perf_counter() - t0
    metrics = {k: np.asarray(v)[:, None] for k, v in metrics.items()}  # [U, 1]: one seed
    bad = np.flatnonzero(metrics["nonfinite"][:, 0] > 0)
    if bad.size:
        code = int(metrics["nonfinite"][bad[0], 0])
        raise NonFiniteError(f"non-finite {describe_nonfinite(code)} at update {bad[0] + 1}")
    state = state._replace(params=jax.tree.map(lambda x: np.asarray(x)[None], state.params))  # [1, ...]: one seed
    summary = _summarize(config, seeds, state, metrics, timing, config.env_steps)
    summary.update(processes=jax.process_count(), devices=es.mesh.size, shard_envs=True)
    _export_policies(es.ctx, config, seeds, state, out)
    runs.write_metrics_csv(out / "metrics.csv", metrics, seeds)
    runs.write_json(out / "summary.json", summary)
    runs.plot_curve(out / "curve.png", metrics["env_steps"], metrics["episode_return"], seeds, config.env)
    print(
        f"final return {summary['final_return_mean']:.2f} | compile {timing['compile']:.1f} s | "
        f"{_speed_text(summary)}\nrun folder: {out}"
    )
    return 0


def seed_list(config: PPOConfig, count: int) -> list[int]:
    """The seeds config.seed, config.seed + 1, ... of `count` runs, checked as sweeps check them."""
    from ppo_jax.runtime.sweeps import resolve_seeds

    return list(resolve_seeds(config, count))


def _refuse_used_run_dir(out: str | None) -> None:
    """A fresh run may not write into a folder that holds another run: its checkpoints would be
    mixed with the new ones (a save at an update number already there is skipped, and `eval`
    reads the newest). Raises `ConfigError` naming what was found."""
    from ppo_jax.runtime.checkpoint import CHECKPOINT_DIR

    if out is None:
        return
    # what a training run writes into its folder; any of them means the folder holds a run
    found = [
        name for name in ("config.json", "summary.json", "metrics.csv", CHECKPOINT_DIR) if (Path(out) / name).exists()
    ]
    if found:
        raise ConfigError(
            "out",
            f"{out} already holds a run ({', '.join(found)}); continue it with --resume {out}, or choose another --out",
        )


def _seed_mesh(num_seeds: int):
    """The mesh that shards the seed axis over every device; None for one device or one seed.
    Raises `ConfigError` when the seeds do not divide over the devices."""
    import jax

    from ppo_jax.runtime.distributed import check_divisible, run_mesh

    if jax.device_count() == 1 or num_seeds == 1:
        return None
    check_divisible(num_seeds, jax.device_count(), "seeds", "seeds")
    return run_mesh()


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf."""


def _speed_text(summary: dict[str, Any]) -> str:
    """'run s | env-steps/s' of a summary; a resumed run that had nothing left says so instead."""
    if not math.isfinite(summary["env_steps_per_second"]):
        return "no updates were left to run"
    return f"run {summary['run_seconds']:.1f} s | {summary['env_steps_per_second']:,.0f} env-steps/s"


def _summarize(config: PPOConfig, seeds, state, metrics, timing, steps_run: int) -> dict[str, Any]:
    import jax

    per_seed = runs.final_returns(metrics["episode_return"])
    finite = per_seed[np.isfinite(per_seed)]
    stat = (lambda f: float(f(finite))) if finite.size else (lambda f: math.nan)
    return {
        "env": config.env,
        "seeds": seeds,
        "total_timesteps": config.env_steps,
        "num_updates": config.num_updates,
        "final_return_mean": stat(np.mean),
        "final_return_std": stat(np.std),
        "final_return_min": stat(np.min),
        "final_return_max": stat(np.max),
        "final_return_per_seed": per_seed.tolist(),
        "compile_seconds": timing["compile"],
        "run_seconds": timing["run"],
        "env_steps_per_second": steps_run / timing["run"] if timing["run"] > 0 else math.nan,
        "checkpoint_seconds": timing["save"],
        "checkpoints_saved": timing["saves"],
        "params_sha256": runs.params_sha256(state.params),
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
    }


def _export_policies(ctx, config: PPOConfig, seeds, state, out: Path) -> None:
    import jax

    from ppo_jax.engine.evaluate import export_policy

    for s, seed in enumerate(seeds):
        params = jax.tree.map(lambda x: x[s], state.params)
        stats = jax.tree.map(lambda x: x[s], state.env.obs_stats) if config.normalize_obs else None
        export_policy(out / f"policy-seed{seed}.npz", ctx.rollout.network, ctx.rollout.spec, params, stats, config.env)


def cmd_eval(args: argparse.Namespace) -> int:
    import jax

    from ppo_jax.engine.evaluate import evaluate, max_episode_steps
    from ppo_jax.engine.train import make_context
    from ppo_jax.runtime.checkpoint import RunCheckpoints, config_from_meta

    if args.episodes < 1:
        raise ConfigError("episodes", f"must be a positive integer, got {args.episodes}")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError("run_dir", f"run folder {run_dir} does not exist")
    saved_config = run_dir / "config.json"
    if saved_config.is_file() and json.loads(saved_config.read_text()).get("shard_envs"):
        raise CheckpointError(
            f"{run_dir} was trained with --shard-envs, which keeps no checkpoints; its policy is "
            f"{run_dir / 'policy-seed0.npz'} (ppo_jax.load_policy(path).act(obs))"
        )
    store = RunCheckpoints(run_dir, create=False)
    config = config_from_meta(store.read_meta())
    ctx = make_context(config)
    saved, meta = store.restore(ctx)
    roll = ctx.rollout
    stats = saved.state.env.obs_stats if config.normalize_obs else None
    max_steps = max_episode_steps(roll.env_params)

    def one(params, obs_stats, key):
        return evaluate(
            roll.env,
            roll.env_params,
            roll.network,
            roll.spec,
            params,
            obs_stats,
            key,
            args.episodes,
            max_steps,
            args.stochastic,
        )

    keys = jax.random.split(jax.random.key(args.seed), len(meta["seeds"]))
    result = jax.jit(jax.vmap(one, in_axes=(0, None if stats is None else 0, 0)))(saved.state.params, stats, keys)
    returns = np.asarray(result.returns, np.float64)
    pooled = returns.ravel()
    half = 1.96 * pooled.std(ddof=1) / math.sqrt(pooled.size) if pooled.size > 1 else math.nan
    report = {
        "run_dir": str(run_dir),
        "update": meta["update"],
        "episodes_per_seed": args.episodes,
        "policy": "stochastic" if args.stochastic else "deterministic (mode)",
        "return_mean": float(pooled.mean()),
        "return_std": float(pooled.std()),
        "ci95_low": float(pooled.mean() - half),
        "ci95_high": float(pooled.mean() + half),
        "return_mean_per_seed": returns.mean(axis=1).tolist(),
        "length_mean": float(np.asarray(result.lengths).mean()),
        "eval_seed": args.seed,
    }
    runs.write_json(run_dir / "eval.json", report)
    print(
        f"{config.env} @ update {meta['update']}: return {report['return_mean']:.2f} ± {report['return_std']:.2f} "
        f"(95% CI {report['ci95_low']:.2f} .. {report['ci95_high']:.2f}) over {pooled.size} episodes, "
        f"{report['policy']} policy -> {run_dir / 'eval.json'}"
    )
    if args.render:
        _render(ctx, saved.state, stats, args, max_steps)
    return 0


def _render(ctx, state, stats, args: argparse.Namespace, max_steps: int) -> None:
    """Play one episode of the first seed on the host and save it with gymnax's visualizer."""
    import jax

    from ppo_jax.engine.evaluate import policy_action

    roll = ctx.rollout
    params = jax.tree.map(lambda x: x[0], state.params)
    stats0 = None if stats is None else jax.tree.map(lambda x: x[0], stats)
    act = jax.jit(lambda o, k: policy_action(roll.network, roll.spec, params, stats0, o, k, args.stochastic))
    step = jax.jit(roll.env.step)
    key = jax.random.key(args.seed)
    obs, env_state = roll.env.reset(key, roll.env_params)
    states, rewards = [env_state], []
    for _ in range(max_steps):
        key, k_act, k_env = jax.random.split(key, 3)
        obs, env_state, reward, terminated, truncated, info = step(k_env, env_state, act(obs, k_act), roll.env_params)
        rewards.append(float(reward))
        if bool(terminated) or bool(truncated):
            break
        states.append(env_state)
    try:
        from gymnax.visualize import Visualizer

        Visualizer(roll.env, roll.env_params, states, np.cumsum(rewards)).animate(args.render)
    except Exception as err:  # rendering depends on optional packages (pygame, pillow)
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        hint = " (install it with: pip install 'ppo_jax[render]')" if isinstance(cause, ImportError) else ""
        raise OSError(f"cannot render {ctx.config.env} to {args.render}: {cause}{hint}") from err
    print(f"wrote {len(states)} frames to {args.render}")


def cmd_compare(args: argparse.Namespace) -> int:
    from ppo_jax.config import OBJECTIVES
    from ppo_jax.runtime.compare import compare

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise ConfigError("objectives", f"choose from {', '.join(OBJECTIVES)}, got {args.objectives!r}")
    if args.seeds < 1:
        raise ConfigError("seeds", f"must be a positive integer, got {args.seeds}")
    if args.objective is not None:
        raise ConfigError("objective", "compare trains each of --objectives; remove --objective")
    config = config_from_args(args)
    seeds = seed_list(config, args.seeds)
    out = runs.prepare_dir(args.out or runs.default_run_dir(f"compare-{config.env}"))
    print(f"comparing {', '.join(objectives)} on {config.env}: {len(seeds)} seeds x {config.env_steps:,} steps")
    results = compare(config, objectives, seeds, timer=time.perf_counter)
    rows = []
    print(f"{'objective':<11} {'final mean':>10} {'IQM':>8} {'95% CI':>19} {'AUC':>8} {'seconds':>8}")
    for r in sorted(results, key=lambda r: -np.nan_to_num(r.iqm, nan=-np.inf)):
        ci = f"[{r.ci_low:.1f}, {r.ci_high:.1f}]"
        mean = float(np.nanmean(r.final_returns)) if np.isfinite(r.final_returns).any() else math.nan
        print(f"{r.objective:<11} {mean:>10.1f} {r.iqm:>8.1f} {ci:>19} {r.auc:>8.1f} {r.seconds:>8.1f}")
        rows.append(
            {
                "objective": r.objective,
                "num_epochs": r.config.num_epochs,
                "num_minibatches": r.config.num_minibatches,
                "final_returns": r.final_returns.tolist(),
                "final_return_mean": mean,
                "iqm": r.iqm,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "auc": r.auc,
                "seconds": r.seconds,
            }
        )
    runs.write_json(
        out / "compare.json", {"env": config.env, "seeds": seeds, "config": config.to_dict(), "objectives": rows}
    )
    runs.plot_compare(out / "compare.png", results, config.env)
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-jax", description="Pure-functional PPO in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train PPO on a gymnax environment (CartPole-v1 by default)",
        description="Train PPO; every config field is a flag. Writes config.json, metrics.csv, "
        "summary.json and curve.png to the run folder.",
    )
    add_config_flags(train)
    train.add_argument("--seeds", type=int, default=1, help="number of seeds trained together with jax.vmap")
    train.add_argument("--out", default=None, help="run folder (default: runs/<env>-<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no live progress line")
    train.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="N", help="save a checkpoint every N updates"
    )
    train.add_argument("--keep", type=int, default=None, metavar="K", help="keep only the newest K checkpoints")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    train.add_argument(
        "--shard-envs",
        action="store_true",
        help="one run with its num_envs environments split over all devices, gradients averaged (no checkpoints)",
    )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate the final checkpoint of a run folder")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--episodes", type=int, default=100, help="episodes per seed (default: 100)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode action")
    ev.add_argument("--seed", type=int, default=0, help="evaluation seed (default: 0)")
    ev.add_argument("--render", default=None, metavar="OUT.gif", help="also write one episode as an animation")
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser(
        "compare", help="train clip, kl_penalty, reinforce and a2c over seeds and compare their learning curves"
    )
    add_config_flags(cmp)
    cmp.add_argument("--seeds", type=int, default=8, help="seeds per objective (default: 8)")
    cmp.add_argument("--objectives", default="clip,kl_penalty,reinforce,a2c", help="comma-separated objectives")
    cmp.add_argument("--out", default=None, help="output folder (default: runs/compare-<env>-<timestamp>)")
    cmp.set_defaults(func=cmd_compare)

    from ppo_jax.commands.rlhf import add_rlhf_parser
    from ppo_jax.commands.sweep import add_sweep_parser

    add_sweep_parser(sub)
    sub.add_parser("bench", help="benchmark against rejax and Stable-Baselines3 (see ppo-jax bench --help)")

    add_rlhf_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    if argv[0] == "bench":  # the benchmark owns its flags
        from ppo_jax.bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run `args.func(args)`, mapping errors to one line on stderr and an exit code (no traceback)."""
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        _print_err(str(err))
        return 2
    except (OSError, CheckpointError) as err:
        _print_err(str(err))
        return 1
    except NonFiniteError as err:
        _print_err(str(err))
        return 3
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
