"""The RL phase as a long run: chunks of updates between checkpoints, exact resume, stop signals and
the NaN/Inf check, around the jitted updates of `finetune`.

`run_rl_phase(...)` runs `rl_updates` updates for every seed key at once (`jax.vmap`) in chunks
that end on multiples of `checkpoint_every` and, with `report_every`, of that: the progress
callback then runs on the host after each chunk, once per update, so the compiled chunk holds no
host callback and JAX's persistent cache keeps it (a later run loads it instead of compiling).
After each chunk it checks the per-update `nonfinite` bitmask (`NonFiniteError` naming the
quantity, the update and the seed) and, at a multiple of the interval, saves the RL state of
every seed (parameters, optimizer state, RNG key, update count) and the metrics so far to
`<out>/checkpoints/<update>` with orbax (the classic trainer's `RunCheckpoints`; a process killed
while saving leaves the previous checkpoint whole).
A `StopRequest` (SIGINT / SIGTERM, `runtime.signals`) ends the run at the next chunk boundary,
after saving, with `RunStopped`. Resuming restores the newest checkpoint and continues: the RNG
key is part of the state, so the parameters equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ppo_jax.errors import CheckpointError, NonFiniteError, RunStopped
from ppo_jax.rlhf import sharding
from ppo_jax.rlhf.ahead import call
from ppo_jax.rlhf.config import RLHFConfig, RLHyperparams
from ppo_jax.rlhf.finetune import RLState, describe_nonfinite, init_rl_state, rl_update
from ppo_jax.rlhf.rollout import Frozen, RLParams
from ppo_jax.rlhf.setup import RLSetup
from ppo_jax.runtime import files
from ppo_jax.runtime.checkpoint import RunCheckpoints, _first_line, _ocp, _on_this_device
from ppo_jax.runtime.signals import StopRequest

FORMAT_VERSION = 1
KIND = "rlhf-rl"
COMMAND = "ppo-jax rlhf"


class RunOptions(NamedTuple):
    """How the RL phase runs: where it checkpoints, how often, whether it resumes, and the stop request."""

    out: Path | None = None  # run folder of the checkpoints (None: no checkpoints)
    checkpoint_every: int = 0  # updates between checkpoints (0: none)
    resume: bool = False  # continue from the newest checkpoint in `out` (from the start if none)
    stop: StopRequest | None = None  # its `requested` flag is read after every chunk
    keep: int | None = 2  # checkpoints kept (the newest)
    report_every: int = 0  # >0: the callback runs on the host after chunks of this many updates


class RLCheckpoints(RunCheckpoints):
    """`<out>/checkpoints/<update>` of the RL phase: the stacked `RLState` of every seed (the key as
    raw key data), the metrics so far [updates, seeds] and JSON metadata."""

    format_version = FORMAT_VERSION

    def save_rl(self, state: RLState, history: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        ocp = _ocp()
        item = {"state": state._replace(key=jax.random.key_data(state.key)), "history": history}
        args = ocp.args.Composite(state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta))
        self.manager.save(meta["update"], args=args, force=True)
        self.manager.wait_until_finished()

    def restore_rl(self, abstract_state: RLState) -> tuple[RLState, dict[str, np.ndarray], dict[str, Any]]:
        """The newest checkpoint: (state with a typed key, history, metadata)."""
        ocp = _ocp()
        update = self._pick(None)
        meta = self.read_meta(update)
        if meta.get("kind") != KIND:
            raise CheckpointError(f"checkpoint {self.directory / str(update)} is not an RL-phase checkpoint")
        seeds = meta["seeds"]
        history = {name: jax.ShapeDtypeStruct((meta["update"], seeds), np.float32) for name in meta["metric_names"]}
        state = abstract_state._replace(key=jax.eval_shape(jax.random.key_data, abstract_state.key))
        target = _on_this_device({"state": state, "history": history})
        try:
            restored = self.manager.restore(update, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as err:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"checkpoint {self.directory / str(update)} is corrupted or incomplete ({_first_line(err)})"
                f"{self._older(update)}"
            ) from err
        item = restored.state
        state = RLState(*item["state"])
        state = state._replace(key=jax.random.wrap_key_data(state.key))
        return state, {k: np.asarray(v) for k, v in item["history"].items()}, meta


def chunk_length(total: int, every: int, done: int, report: int = 0) -> int:
    """Updates in the chunk after `done`: chunks end on multiples of `every` and of `report`
    (each ignored when 0) and at `total`."""
    ends = [total] + [(done // k + 1) * k for k in (every, report) if k]
    return min(ends) - done


def _chunking(setup: RLSetup, callback, options: RunOptions) -> tuple[int, int, int, Any]:
    """(updates in all, checkpoint interval, report interval, the callback the chunk program
    holds): the interval is 0 without checkpoints or reports; the program holds no callback when
    the host reports between chunks (a program holding a host callback is never cached)."""
    total, every = setup.config.rl_updates, options.checkpoint_every if options.out is not None else 0
    report = options.report_every if callback is not None else 0
    return total, every, report, None if report else callback


def chunk_schedule(setup: RLSetup, callback, options: RunOptions) -> tuple[Any, list[int]]:
    """(the callback the chunk program holds: None when the host reports between chunks; the
    distinct chunk lengths of a run from update 0, in the order they first come)."""
    total, every, report, in_program = _chunking(setup, callback, options)
    lengths, done = [], 0
    while done < total:
        n = chunk_length(total, every, done, report)
        lengths += [] if n in lengths else [n]
        done += n
    return in_program, lengths


def replay(callback, done: int, metrics: dict[str, np.ndarray]) -> None:
    """Report a finished chunk's updates to `callback("rl", update [S], {name: [S]})`, one call
    per update (metrics [S, n], the chunk starting after update `done`)."""
    seeds, length = next(iter(metrics.values())).shape
    for u in range(length):
        callback("rl", np.full(seeds, done + u + 1), {name: values[:, u] for name, values in metrics.items()})


@functools.partial(jax.jit, static_argnames=("setup",))
def init_states(setup: RLSetup, hp: RLHyperparams, params: RLParams, keys: jax.Array) -> RLState:
    """The RL state of every seed key [S]: leaves with a leading [S]."""
    return jax.vmap(lambda key: init_rl_state(setup, hp, params, key))(keys)


def seeds_update(setup: RLSetup, callback, hp: RLHyperparams, frozen: Frozen, states: RLState, _=None):
    """One update of every seed (`jax.vmap`), then one host report `callback("rl", update [S],
    metrics {name: [S]})` for all seeds together (inside the vmap it would come once per seed,
    without saying which)."""
    states, metrics = jax.vmap(lambda state: rl_update(setup, None, hp, frozen, state))(states)
    if callback is not None:
        jax.debug.callback(functools.partial(callback, "rl"), states.update, metrics)
    return states, metrics


@functools.partial(jax.jit, static_argnames=("setup", "callback", "length"))
def run_chunk(setup: RLSetup, callback, hp: RLHyperparams, frozen: Frozen, states: RLState, length: int):
    """`length` updates of every seed: (states, metrics [S, length])."""
    update = functools.partial(seeds_update, setup, callback, hp, frozen)
    states, metrics = lax.scan(update, states, None, length=length)
    return states, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), metrics)


def check_finite(history: dict[str, np.ndarray], done: int, store: RLCheckpoints | None) -> None:
    """Raise `NonFiniteError` naming the quantity, the update and the seed of the first NaN/Inf
    in a chunk's metrics ([seeds, updates], the chunk starting after update `done`)."""
    codes = np.asarray(history["nonfinite"])
    bad = np.argwhere(codes.T > 0)
    if not bad.size:
        return
    u, s = bad[0]
    last = store.latest_update() if store is not None else None
    keep = f"the last good checkpoint (update {last}) is kept" if last else "no checkpoint was written"
    raise NonFiniteError(
        f"non-finite {describe_nonfinite(int(codes[s, u]))} at RL update {done + u + 1} (seed index {s}); {keep}; "
        "a lower --rl-lr or --max-grad-norm usually helps (run again into the same folder with --overwrite)"
    )


def _meta(config: RLHFConfig, seeds: int, update: int, names, reference_sha256: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "config": config.to_dict(),
        "seeds": seeds,
        "update": update,
        "metric_names": list(names),
        "reference_sha256": reference_sha256,
    }


def _resume(store: RLCheckpoints, config: RLHFConfig, abstract: RLState, reference_sha256: str):
    """(state, history, update) of the newest checkpoint, refused when it belongs to another run."""
    state, history, meta = store.restore_rl(abstract)
    for name, value in meta["config"].items():
        mine = config.to_dict().get(name)
        if mine != value:
            raise CheckpointError(f"checkpoint config differs in {name}: saved {value!r}, requested {mine!r}")
    if meta.get("reference_sha256") != reference_sha256:
        raise CheckpointError(
            f"{store.directory}: the reference policy differs from the one the checkpoint was trained against "
            "(pretraining did not reproduce it); run again with --overwrite"
        )
    return state, history, int(meta["update"])


def run_rl_phase(
    setup: RLSetup,
    start: RLParams,
    frozen: Frozen,
    keys: jax.Array,
    hp: RLHyperparams,
    callback=None,
    options: RunOptions | None = None,
    ahead: dict[int, Any] | None = None,
) -> tuple[RLState, dict[str, np.ndarray]]:
    """`setup.config.rl_updates` updates from `start` for every key in `keys` [S], checkpointed,
    resumable and stoppable as the module docstring says. Returns (the final state of every seed,
    metrics {name: [S, updates]}). Raises `NonFiniteError`, `RunStopped`, `CheckpointError`.
    `ahead`: {chunk length: future of its compiled chunk program} (`rlhf.ahead`)."""
    options, ahead = options or RunOptions(), ahead or {}
    total, every, report, in_program = _chunking(setup, callback, options)
    store = RLCheckpoints(options.out, keep=options.keep) if options.out is not None else None
    start, frozen = sharding.place((start, frozen), setup.sharding)  # on the mesh, if any
    reference_sha256 = files.params_sha256(frozen.reference)
    state, done, chunks = init_states(setup, hp, start, keys), 0, []
    try:
        if options.resume and store is not None and store.latest_update() is not None:
            restored, history, done = _resume(store, setup.config, state, reference_sha256)
            # restored onto one device: laid out as the fresh state is (on the mesh with --shard-params)
            state = jax.device_put(restored, jax.tree.map(lambda x: x.sharding, state))
            chunks.append({k: v.T for k, v in history.items()})
        while done < total:
            n = chunk_length(total, every, done, report)
            jitted = functools.partial(run_chunk, setup, in_program, hp, frozen, state, n)
            state, metrics = jax.block_until_ready(call(ahead.get(n), jitted, hp, frozen, state))
            metrics = {k: np.asarray(v) for k, v in metrics.items()}
            check_finite(metrics, done, store)
            chunks.append(metrics)
            if report:
                replay(callback, done, metrics)
            done += n
            stopping = options.stop is not None and options.stop.requested and done < total
            if store is not None and (stopping or (every and (done % every == 0 or done == total))):
                history = {k: np.concatenate([c[k] for c in chunks], axis=1).T for k in chunks[0]}
                store.save_rl(state, history, _meta(setup.config, len(keys), done, history, reference_sha256))
            if stopping:
                raise RunStopped(options.out, done, total, command=COMMAND)
    finally:
        if store is not None:
            store.close()
    return state, {k: np.concatenate([c[k] for c in chunks], axis=1) for k in chunks[0]}
