"""Checkpoints with orbax-checkpoint: everything needed to continue a run exactly.

A checkpoint holds the `TrainState` (parameters, optimizer state with its step count, env
states, last observations, RNG key, normalisation statistics, update counter), the traced
hyperparameters, the metrics of the updates done so far, and JSON metadata (config, seeds,
format version). Orbax writes into a temporary folder and renames it when complete, so a process
killed during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax import plugins
from ppo_jax.config import TRACED_FIELDS, CheckpointError, ConfigError, Hyperparams, PPOConfig, config_from_record
from ppo_jax.engine.train import TrainContext, TrainState, broadcast_hparams, init_state, make_context
from ppo_jax.runtime import files

# 2: the env carry holds the policy's recurrent state and episode-start flags (ppo_jax 0.2)
# 3: the objective's state replaces kl_coef in the state; the parts' traced fields in hparams.extra
FORMAT_VERSION = 3
CHECKPOINT_DIR = "checkpoints"


class Checkpoint(NamedTuple):
    """What is saved: the state with its RNG key as raw key data, hparams and metrics so far."""

    state: TrainState
    hparams: Hyperparams
    metrics: dict[str, Any]


def _ocp():
    import orbax.checkpoint as ocp

    # orbax logs every unreadable file through absl before raising; the exception carries the
    # problem, which CheckpointError reports with the checkpoint's path and what to do
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    return ocp


def _to_saveable(state: TrainState) -> TrainState:
    """The state with its typed key as raw key data (a state gathered to NumPy holds that already)."""
    if isinstance(state.key, jax.Array) and jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key):
        return state._replace(key=jax.random.key_data(state.key))
    return state


def _from_saveable(state: TrainState) -> TrainState:
    return state._replace(key=jax.random.wrap_key_data(state.key))


def config_from_meta(meta: dict[str, Any], given: dict[str, Any] | None = None) -> PPOConfig:
    """Rebuild the `PPOConfig` stored in checkpoint metadata (its parts by name or reference:
    `ConfigError` naming a reference that cannot be imported)."""
    plugins.check_rebuildable(meta, "this run", given)
    return config_from_record(meta["config"])


def _saved_hparams(hparams: Hyperparams, saved_config: dict[str, Any]) -> dict[str, Any]:
    """The fields of `hparams` that a checkpoint written with `saved_config` holds, as a dict
    (a checkpoint from before a traced field existed lacks it)."""
    out: dict[str, Any] = {name: getattr(hparams, name) for name in TRACED_FIELDS if name in saved_config}
    extra = {name: value for name, value in hparams.extra.items() if name in saved_config}
    return {**out, "extra": extra} if extra else out


def _hparams_tree(hparams: Any) -> Any:
    """`Hyperparams` as the checkpoint holds them: a dict of the built-in fields, with `extra` only
    when the parts declare traced fields (an empty dict would be stored as a node of its own)."""
    if not isinstance(hparams, Hyperparams):
        return hparams
    tree: dict[str, Any] = {name: getattr(hparams, name) for name in TRACED_FIELDS}
    return {**tree, "extra": dict(hparams.extra)} if hparams.extra else tree


def _with_defaults(saved: dict[str, Any], defaults: Hyperparams) -> Hyperparams:
    """`Hyperparams` from the restored fields, the missing ones from `defaults` (the config's,
    which for a field added later is the value that was fixed before it was a field)."""
    extra = saved.get("extra") or {}
    return Hyperparams(
        **{name: saved.get(name, getattr(defaults, name)) for name in TRACED_FIELDS},
        extra={name: extra.get(name, value) for name, value in defaults.extra.items()},
    )


def abstract_checkpoint(ctx: TrainContext, num_runs: int, num_updates_done: int, metric_names) -> Checkpoint:
    """Shapes and dtypes of a checkpoint of `num_runs` runs (the restore target)."""
    hparams = broadcast_hparams(ctx.config.hyperparams(), num_runs)
    seeds = np.arange(num_runs, dtype=np.uint32)

    def init(seeds, hparams):  # shapes only: nothing runs, nothing compiles
        return _to_saveable(jax.vmap(functools.partial(init_state, ctx))(jax.vmap(jax.random.key)(seeds), hparams))

    state = jax.eval_shape(init, seeds, hparams)
    metric = jax.ShapeDtypeStruct((num_updates_done, num_runs), np.float32)
    return Checkpoint(state, jax.eval_shape(lambda h: h, hparams), {name: metric for name in metric_names})


def saved_target(state: TrainState, hparams: Hyperparams, meta: dict[str, Any]) -> Checkpoint:
    """The restore target of the checkpoint `meta` describes, from the shapes of the state as
    the run lays it out ([R, ...], the key as raw key data: the runner's `saved_shapes`) and of
    its batched `hparams`; built once, nothing traced."""
    runs = len(meta["seeds"])
    metric = jax.ShapeDtypeStruct((int(meta["update"]), runs), np.float32)
    hparams = _saved_hparams(jax.eval_shape(lambda h: h, hparams), meta["config"])
    return _on_this_device(Checkpoint(state, hparams, {name: metric for name in meta["metric_names"]}))


def newest_meta(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of a run folder's newest checkpoint; None when it has none (yet)."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return None
    with RunCheckpoints(run_dir, create=False) as store:
        return None if store.latest_update() is None else store.read_meta()


def _on_this_device(target: Any) -> Any:
    """The restore target with every array on this process's first device. Without a sharding,
    orbax restores onto the devices recorded at save time, which fails when the device count has
    changed (a 2-device CPU run evaluated in a 1-device process, a CPU run resumed on a GPU)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)


def _meta(ctx: TrainContext, seeds, update: int, metric_names, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "env": ctx.config.env,
        "config": ctx.config.to_dict(),
        "seeds": list(seeds),
        "update": int(update),
        "metric_names": list(metric_names),
        "unrecorded": list(ctx.unrecorded),
        **(extra or {}),
    }


def open_run(run_dir: str | os.PathLike) -> RunCheckpoints:
    """The checkpoints of a `ppo-jax train` run folder, for reading; `ConfigError` naming what the
    path is instead (missing, a file, another command's folder, a run with no checkpoint yet)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError("run_dir", f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise ConfigError("run_dir", f"{run_dir} is a file; give the run folder that ppo-jax train wrote")
    if not (run_dir / CHECKPOINT_DIR).is_dir() or not any((run_dir / CHECKPOINT_DIR).iterdir()):
        files.refuse_other_kind(run_dir, "run", "run_dir")
        advice = files.nonfinite_advice(run_dir)
        if advice:
            raise CheckpointError(advice)
        if (run_dir / "config.json").exists():
            raise CheckpointError(
                f"{run_dir} has no checkpoint yet (its run stopped before the first one); "
                f"continue it with: ppo-jax train --resume {run_dir}"
            )
        raise ConfigError(
            "run_dir", f"no checkpoint found in {run_dir / CHECKPOINT_DIR}: {run_dir} holds no ppo_jax run"
        )
    return RunCheckpoints(run_dir, create=False)


class RunCheckpoints:
    """The checkpoints of one run folder (`<run>/checkpoints/<update>`), keeping the newest `keep`."""

    format_version = FORMAT_VERSION  # what `read_meta` accepts (a subclass stores another kind)

    def __init__(self, run_dir: str | os.PathLike, keep: int | None = None, create: bool = True):
        """`create=False` (reading only: eval, the resume set-up) leaves a folder without
        checkpoints as it was and raises `CheckpointError`. Orbax is imported and its manager
        made on first use (a run that saves only at its end imports it while it trains)."""
        self.directory = Path(run_dir).resolve() / CHECKPOINT_DIR
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        self.keep, self.create = keep, create
        self._manager = None

    @property
    def manager(self):
        if self._manager is None:
            ocp = _ocp()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep, enable_async_checkpointing=False, create=self.create
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        return self._manager

    def save(
        self, ctx: TrainContext, seeds, state: TrainState, hparams: Hyperparams, metrics: dict, extra_meta=None
    ) -> None:
        """Save after `state.update` updates (blocking; the previous checkpoint survives a crash).
        `extra_meta`: more JSON fields for the metadata (e.g. how the run was laid out)."""
        ocp = _ocp()
        update = int(np.max(np.asarray(state.update)))
        metrics = {k: np.asarray(v, np.float32) for k, v in metrics.items()}
        item = Checkpoint(_to_saveable(state), _hparams_tree(hparams), metrics)
        meta = _meta(ctx, seeds, update, list(metrics), extra_meta)
        args = ocp.args.Composite(state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta))
        self.manager.save(update, args=args, force=True)
        self.manager.wait_until_finished()

    def latest_update(self) -> int | None:
        return self.manager.latest_step()

    def read_meta(self, update: int | None = None) -> dict[str, Any]:
        """The JSON metadata of a checkpoint (newest by default)."""
        ocp = _ocp()
        update = self._pick(update)
        try:
            meta = self.manager.restore(update, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as err:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} is unreadable ({_first_line(err)}){self._older(update)}"
            ) from err
        if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int):
            raise CheckpointError(f"checkpoint {self.directory / str(update)} has an unknown format")
        if meta["format_version"] != self.format_version:
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} has format {meta['format_version']}, this ppo_jax reads "
                f"format {self.format_version}: resume or evaluate it with the ppo_jax version that wrote it"
            )
        return meta

    def _pick(self, update: int | None) -> int:
        steps = self.manager.all_steps(read=True)
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        if update is None:
            return max(steps)
        if update not in steps:
            raise CheckpointError(f"no checkpoint for update {update} in {self.directory}; have {sorted(steps)}")
        return update

    def restore(self, ctx: TrainContext, update: int | None = None) -> tuple[Checkpoint, dict[str, Any]]:
        """Restore a checkpoint for the run described by `ctx`; refuse one from another env/config."""
        update = self._pick(update)
        meta = self.read_meta(update)
        check_compatible(meta, ctx.config)
        target = abstract_checkpoint(ctx, len(meta["seeds"]), meta["update"], meta["metric_names"])
        target = _on_this_device(target._replace(hparams=_saved_hparams(target.hparams, meta["config"])))
        defaults = broadcast_hparams(ctx.config.hyperparams(), len(meta["seeds"]))
        return self.restore_saved(update, target, defaults), meta

    def restore_saved(self, update: int, target: Checkpoint, defaults: Hyperparams) -> Checkpoint:
        """Restore checkpoint `update` into `target` (`saved_target`); hyperparameters a checkpoint
        from before they existed lacks come from `defaults`."""
        ocp = _ocp()
        try:
            restored = self.manager.restore(update, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} is corrupted or incomplete ({_first_line(err)})"
                f"{self._older(update)}"
            ) from err
        item = restored.state
        hparams = _with_defaults(dict(item.hparams), defaults)
        return Checkpoint(_from_saveable(TrainState(*item.state)), hparams, dict(item.metrics))

    def _older(self, update: int) -> str:
        """What to do about a damaged checkpoint: the older ones to fall back on, if any."""
        older = sorted(s for s in self.manager.all_steps(read=True) if s < update)
        if older:
            return f"; older checkpoints {older} are kept: move this one out of {self.directory} to use them"
        return "; no older checkpoint is kept"

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _first_line(err: Exception, limit: int = 200) -> str:
    """The start of an orbax/TensorStore error (their messages carry kilobytes of specs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_compatible(meta: dict[str, Any], config: PPOConfig) -> None:
    """Raise `CheckpointError` if a checkpoint was written for another env or static config."""
    saved = meta.get("config", {})
    if saved.get("env") != config.env:
        raise CheckpointError(f"checkpoint is for env {saved.get('env')!r}, not {config.env!r}")
    current = config.to_dict()
    for name, value in saved.items():
        mine = current.get(name)
        if isinstance(mine, tuple):
            mine = list(mine)
        if name != "seed" and mine != value:
            raise CheckpointError(f"checkpoint config differs in {name}: saved {value!r}, requested {mine!r}")


def save(
    path: str | os.PathLike,
    state: TrainState,
    config: PPOConfig,
    hparams: Hyperparams | None = None,
    unrecorded: tuple[str, ...] = (),
) -> None:
    """Save one `TrainState` (single run or batched) to the folder `path` (atomic write).
    `unrecorded`: the parts of the run given as objects without an importable reference
    (`TrainContext.unrecorded`); `load` then needs them again."""
    ocp = _ocp()
    hparams = config.hyperparams() if hparams is None else hparams
    item = {"state": _to_saveable(state), "hparams": _hparams_tree(hparams)}
    meta = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "batch_shape": list(np.shape(state.update))}
    meta["unrecorded"] = list(unrecorded)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            Path(path).resolve(),
            args=ocp.args.Composite(state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta)),
            force=True,
        )


def load(
    path: str | os.PathLike, env: Any = None, env_params: Any = None, network: Any = None, objective: Any = None
) -> tuple[TrainState, PPOConfig]:
    """Load what `save` wrote, or a run folder's newest checkpoint (`ppo-jax train`, a compare
    arm; or one checkpoint `<run>/checkpoints/<update>`): (state, config), a run folder's state
    with leaves [S, ...] over its S seeds. The parts are rebuilt from the names and references
    the checkpoint records; pass `env`/`env_params`, `network` or `objective` for parts that were
    objects without an importable reference (a `ConfigError` names them)."""
    ocp = _ocp()
    path = Path(path).resolve()
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    run = _run_checkpoint(path)
    if run is not None:
        return _load_run(*run, {"env": env, "network": network, "objective": objective}, env_params)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            meta = ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            given = {"env": env, "network": network, "objective": objective}
            config = config_from_meta(meta, given)
            ctx = make_context(config, env, env_params, network=network, objective=objective)
            batch = tuple(meta["batch_shape"])
            init = functools.partial(init_state, ctx)
            for _ in batch:
                init = jax.vmap(init)
            keys = jax.random.split(jax.random.key(0), batch) if batch else jax.random.key(0)
            hparams = jax.tree.map(lambda x: np.broadcast_to(x, batch), config.hyperparams())
            target = {
                "state": jax.eval_shape(lambda k, h: _to_saveable(init(k, h)), keys, hparams),
                "hparams": _saved_hparams(jax.eval_shape(lambda h: h, hparams), meta["config"]),
            }
            target = _on_this_device(target)
            item = ckptr.restore(path, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
    except (CheckpointError, ConfigError):
        raise
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupted: {err}") from err
    return _from_saveable(TrainState(*item["state"])), config


def _run_checkpoint(path: Path) -> tuple[Path, int | None] | None:
    """(run folder, update or None for the newest) when `path` is a run folder with checkpoints
    or one of its checkpoints; None for anything else (what `save` wrote)."""
    if (path / CHECKPOINT_DIR).is_dir():
        return path, None
    if path.parent.name == CHECKPOINT_DIR and path.name.isdigit():
        return path.parent.parent, int(path.name)
    return None


def _load_run(run_dir: Path, update: int | None, given: dict[str, Any], env_params: Any):
    with open_run(run_dir) as store:
        config = config_from_meta(store.read_meta(update), given)
        ctx = make_context(config, given["env"], env_params, network=given["network"], objective=given["objective"])
        saved, _ = store.restore(ctx, update)
    return saved.state, config  # its key typed again by `restore`
