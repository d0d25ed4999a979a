"""`ppo-jax eval`'s compiled program, kept whole so that a repeat runs it without tracing.

JAX's persistent cache keys a program by its lowered text: a hit there still imports everything the
trace touches (the policy family, the environment suite, Flax), traces and lowers the program
(about a second of the 2.4 s that `ppo-jax eval` of a CartPole run took on a repeat). This store
keys the compiled evaluation by what decides it before any trace (`program_key`): the run's
config.json bytes, the episodes and the action mode (static), the Python environment and where
ppo_jax and the parts named by reference are imported from, and JAX's version, settings and
devices; each entry also lists the files of every Python module loaded when it was compiled
(path, size, modification time), and one changed since (an edited policy family or environment,
an upgraded package) makes the entry stale. (A dependency found at another path of the same
environment, with its old files left in place, is not noticed: `--no-compile-cache` builds the
program afresh.) The parameters, the observation statistics and the evaluation seed are the
program's arguments.

An entry is `<key>.json` (the inputs' names, shapes and dtypes; the run's env, seeds and final
update; the module files; the sha256 of the program's lowered text) in `eval-programs/` of the
compile cache, and the executable it names `programs/<sha256>.bin` beside it
(`jax.experimental.serialize_executable`'s bytes, unpickled when loaded: like JAX's own cache, the
folder must be the user's own). Runs that differ only in what the program does not depend on (the
learning rate, say) share the executable. Only an executable compiled by the process that keeps it
is written: one that JAX loaded from its own cache does not serialise whole (jaxlib 0.10: running
it fails with "Function ... not found"), so a program found in JAX's cache but not kept here is
compiled again once, with JAX's cache off. A missing, stale or unreadable entry is not an error:
the evaluation is then built from the run folder (traced, and its executable taken from here when
kept under another key, else compiled), and kept.

eval.json, the command's record, is written here too (`eval_report`, `write_eval`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ppo_jax import plugins
from ppo_jax.errors import RunFileError
from ppo_jax.runtime import compile_cache, files
from ppo_jax.runtime.policy_arrays import final_policy_paths, read_policy_arrays

STORE = "eval-programs"  # under the compile cache folder
STORE_FORMAT = 4  # 4: the program also returns which episodes were unfinished
DEFAULT_EPISODES = 100  # episodes per seed of `ppo-jax eval` (and of the evaluation a training run keeps)


class EvalProgram(NamedTuple):
    """A run's evaluation, compiled and ready: `compiled(inputs, seed)` returns (returns, lengths,
    unfinished), each [S, episodes]; `inputs` maps `params/<path>` (and `obs_mean`, `obs_var` with observation
    normalisation) to arrays [S, ...] of the run's seeds."""

    env: str
    seeds: list[int]
    update: int
    compiled: Any
    inputs: dict[str, Any]


class Evaluated(NamedTuple):
    """Per-episode returns and lengths of every seed, and whether each episode was still running at
    the evaluation's step limit, [S, episodes] NumPy arrays."""

    returns: np.ndarray
    lengths: np.ndarray
    unfinished: np.ndarray


def run_program(program: EvalProgram, seed: int) -> Evaluated:
    """Run the compiled evaluation with evaluation seed `seed` (the keys are made inside)."""
    returns, lengths, unfinished = program.compiled(program.inputs, np.int32(seed))
    return Evaluated(np.asarray(returns), np.asarray(lengths), np.asarray(unfinished))


def run_kept(program: EvalProgram, seed: int) -> Evaluated | None:
    """`run_program` of a kept program; None when the runtime refuses it (the evaluation is then
    built again)."""
    try:
        return run_program(program, seed)
    except jax.errors.JaxRuntimeError:
        return None


def stacked_inputs(per_seed: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The program's inputs from each seed's flat arrays (`params/<path>`, `obs_mean`, `obs_var`):
    stacked over seeds, [S, ...]."""
    return {name: np.stack([np.asarray(one[name]) for one in per_seed]) for name in per_seed[0]}


def _signature(inputs: dict[str, Any]) -> dict[str, list]:
    return {name: [list(np.shape(x)), str(np.asarray(x).dtype)] for name, x in sorted(inputs.items())}


def _where_parts_come_from(config_bytes: bytes) -> dict[str, str | None]:
    """The files ppo_jax and the top-level package of each part the config names by reference
    (`package.module:attribute`) would be imported from now (found, not imported)."""
    try:
        record = json.loads(config_bytes)
    except ValueError:
        record = {}
    names = {"ppo_jax"} | {
        record[kind].split(":")[0].split(".")[0]
        for kind in plugins.KINDS
        if isinstance(record, dict) and plugins.is_reference(record.get(kind))
    }
    found = {}
    for name in sorted(names):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        found[name] = None if spec is None else spec.origin
    return found


def program_key(config_bytes: bytes, episodes: int, stochastic: bool) -> str:
    """sha256 of what fixes the compiled evaluation before it is traced: the run's config.json
    bytes, the episodes, the action mode, Python's and JAX's versions and environment (sys.prefix),
    where ppo_jax and the parts named by reference are imported from, JAX's settings, the XLA and
    JAX environment variables and the devices."""
    devices = jax.devices()
    parts = {
        "format": STORE_FORMAT,
        "config": hashlib.sha256(config_bytes).hexdigest(),
        "prefix": sys.prefix,
        "packages": _where_parts_come_from(config_bytes),
        "episodes": episodes,
        "stochastic": stochastic,
        "python": sys.version,
        "jax": jax.__version__,
        "settings": sorted((name, repr(value)) for name, value in jax.config.values.items()),
        "environ": sorted((k, v) for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "TPU_", "CUDA_"))),
        "devices": [len(devices), devices[0].platform, devices[0].device_kind],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def loaded_module_files() -> list[list]:
    """[path, size, modification time in ns] of the file of every module loaded now, sorted."""
    found = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in found:
            try:
                stat = os.stat(path)
            except OSError:
                continue
            found[path] = [path, stat.st_size, stat.st_mtime_ns]
    return [found[path] for path in sorted(found)]


def _unchanged(recorded: list[list]) -> bool:
    for path, size, mtime in recorded:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        if stat.st_size != size or stat.st_mtime_ns != mtime:
            return False
    return True


def store_folder() -> Path | None:
    """`eval-programs/` of the compile cache in use, or None when the cache is off."""
    cache = compile_cache.current_dir()
    return None if cache is None else Path(cache) / STORE


def _binary(folder: Path, digest: str) -> Path:
    """Where the executable of the program kept under `digest` lies in the store `folder`."""
    return folder / "programs" / f"{digest}.bin"


def _run_record(program: EvalProgram, normalize_obs: bool) -> dict:
    return dict(env=program.env, seeds=list(program.seeds), update=program.update, normalize_obs=normalize_obs)


def keep(key: str, program: EvalProgram, normalize_obs: bool, digest: str, fresh: bool) -> bool:
    """Keep `program` (of lowered text with sha256 `digest`) as the entry `key`; False, nothing
    written, when the cache is off, the folder cannot be written, or the executable is neither kept
    already nor `fresh` (compiled by this process: one JAX loaded from its cache does not serialise
    whole, `compile_cache.compile_afresh`) or cannot be serialised by this backend."""
    from jax.experimental.serialize_executable import serialize

    folder = store_folder()
    if folder is None:
        return False
    binary = _binary(folder, digest)
    try:
        if not binary.exists():
            if not fresh:
                return False
            binary.parent.mkdir(parents=True, exist_ok=True)
            _write(binary, serialize(program.compiled)[0])
        entry = {
            "format": STORE_FORMAT,
            "program": digest,
            "run": _run_record(program, normalize_obs),
            "inputs": _signature(program.inputs),
            "modules": loaded_module_files(),
        }
        _write(folder / f"{key}.json", json.dumps(entry).encode())
    except (OSError, ValueError, NotImplementedError):
        return False
    return True


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_entry(key: str) -> dict | None:
    """The entry `key` when it is of this format and no module file it lists has changed, else None."""
    folder = store_folder()
    if folder is None:
        return None
    try:
        entry = json.loads((folder / f"{key}.json").read_text())
        if entry.get("format") != STORE_FORMAT or not re.fullmatch("[0-9a-f]{64}", entry["program"]):
            return None
        return entry if _unchanged(entry["modules"]) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_entry(key: str) -> tuple[dict, bytes] | None:
    entry = _read_entry(key)
    if entry is None:
        return None
    try:
        return entry, _binary(store_folder(), entry["program"]).read_bytes()
    except OSError:
        return None


def holds(key: str, program: EvalProgram, normalize_obs: bool) -> bool:
    """Whether the entry `key` is kept for `program`'s run and inputs (as `keep` would write it),
    still fits (`_read_entry`) and its executable file is there: nothing to trace or compile."""
    entry = _read_entry(key)
    if entry is None:
        return False
    fits = entry.get("run") == _run_record(program, normalize_obs) and entry.get("inputs") == _signature(program.inputs)
    return fits and _binary(store_folder(), entry["program"]).exists()


def _deserialize(payload: bytes, inputs: dict[str, Any]):
    """The executable of `payload` for `inputs` and a seed, or None when this jaxlib cannot load it."""
    from jax.experimental.serialize_executable import deserialize_and_load

    try:
        outputs = jax.tree.structure((0,) * len(Evaluated._fields))  # (returns, lengths, unfinished)
        return deserialize_and_load(payload, jax.tree.structure(((inputs, 0), {})), outputs)
    except Exception:  # an entry this jaxlib cannot load: the evaluation is compiled again
        return None


def kept_executable(digest: str, inputs: dict[str, Any]):
    """The kept executable of the program whose lowered text has sha256 `digest`, or None."""
    folder = store_folder()
    try:
        payload = None if folder is None else _binary(folder, digest).read_bytes()
    except OSError:
        return None
    return None if payload is None else _deserialize(payload, inputs)


def _final_inputs(run_dir: Path, run: dict) -> dict[str, np.ndarray] | None:
    """The program's inputs from the run's final policy files (as `policy_file.final_policies`
    reads them), or None when they are not the run's final parameters."""
    try:
        paths = final_policy_paths(run_dir, run["seeds"], run["update"])
        if paths is None:
            return None
        read = [read_policy_arrays(path) for path in paths]
    except (RunFileError, OSError, ValueError, KeyError, TypeError):
        return None
    if any(one.meta.get("env") != run["env"] for one in read):
        return None
    if run["normalize_obs"] and any(one.obs_mean is None for one in read):
        return None
    per_seed = []
    for one in read:
        flat = {f"params/{name}": value for name, value in one.flat_params.items()}
        if run["normalize_obs"]:
            flat.update(obs_mean=one.obs_mean, obs_var=one.obs_var)
        per_seed.append(flat)
    return stacked_inputs(per_seed)


def load_program(run_dir: str | os.PathLike, episodes: int, stochastic: bool) -> EvalProgram | None:
    """The stored evaluation of a finished run folder with its final policies as inputs, or None
    (no entry, a stale one, or a folder whose policy files are not its final parameters)."""
    run_dir = Path(run_dir)
    try:
        if (files.folder_kind(run_dir) or ("",))[0] != "run":
            return None
        config_bytes = (run_dir / "config.json").read_bytes()
    except OSError:
        return None
    found = _load_entry(program_key(config_bytes, episodes, stochastic))
    if found is None:
        return None
    entry, payload = found
    inputs = _final_inputs(run_dir, entry["run"])
    if inputs is None or _signature(inputs) != entry["inputs"]:
        return None
    compiled = _deserialize(payload, inputs)
    if compiled is None:
        return None
    run = entry["run"]
    return EvalProgram(run["env"], list(run["seeds"]), run["update"], compiled, inputs)


def eval_report(run_dir: Path, update: int, episodes: int, stochastic: bool, seed: int, result) -> dict:
    """eval.json: the pooled return over every seed's episodes with a normal 95% interval, and how
    many episodes had not ended at the evaluation's step limit (their returns are partial)."""
    returns = np.asarray(result.returns, np.float64)
    pooled = returns.ravel()
    half = 1.96 * pooled.std(ddof=1) / math.sqrt(pooled.size) if pooled.size > 1 else math.nan
    return {
        "run_dir": str(run_dir),
        "update": update,
        "episodes_per_seed": episodes,
        "policy": "stochastic" if stochastic else "deterministic (mode)",
        "return_mean": float(pooled.mean()),
        "return_std": float(pooled.std()),
        "ci95_low": float(pooled.mean() - half),
        "ci95_high": float(pooled.mean() + half),
        "return_mean_per_seed": returns.mean(axis=1).tolist(),
        "length_mean": float(np.asarray(result.lengths).mean()),
        "episodes_unfinished": int(np.asarray(result.unfinished).sum()),
        "eval_seed": seed,
    }


def write_eval(run_dir: Path, report: dict) -> Path:
    path = run_dir / "eval.json"
    files.write_json(path, report)
    return path
