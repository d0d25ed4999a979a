"""Run folders: summaries of training results and the files a run leaves behind.

The reductions (`final_returns`, `params_sha256`) are pure; the `write_*` functions are the
file I/O used by the command line.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppo_jax.errors import ConfigError, RunFileError


def default_run_dir(env: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<env>-<YYYYmmdd-HHMMSS> (a numeric suffix is added if it exists; the "/" of a
    SUITE/NAME id becomes "-")."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{env.replace('/', '-')}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def prepare_dir(path: str | os.PathLike) -> Path:
    """Create `path` and prove it is writable; raise `OSError` with a clear message otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise OSError(f"output folder {path} is not writable: {err.strerror or err}") from err
    return path


# What a training run writes into its folder (the first four mark a folder as holding a run).
RUN_FILES = ("config.json", "summary.json", "metrics.csv", "checkpoints", "curve.png", "eval.json", "nonfinite.json")
# Written when a run stopped on NaN/Inf before its first checkpoint: resuming would repeat it.
NONFINITE_FILE = "nonfinite.json"


def nonfinite_advice(run_dir: Path) -> str | None:
    """What to do with a folder whose run stopped on NaN/Inf before its first checkpoint (None
    for any other folder): train again with --overwrite and a lower --lr, not --resume."""
    if not (run_dir / NONFINITE_FILE).exists():
        return None
    return (
        f"{run_dir} has no checkpoint: its run stopped on NaN/Inf before the first one, and resuming would repeat "
        f"it; train it again with: ppo-jax train --overwrite --out {run_dir} and a lower --lr (or --max-grad-norm)"
    )


def remove_run_files(folder: Path, keep: Sequence[str] = ()) -> None:
    """Delete what a training run wrote into `folder` (files of `RUN_FILES`, exported policies),
    except the names in `keep`; other files are left alone."""
    if not folder.is_dir():
        return
    names = [name for name in RUN_FILES if name not in keep]
    targets = [folder / name for name in names] + sorted(folder.glob("policy-seed*.npz"))
    for target in targets:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


# The kinds of folder the commands write: kind -> (what the folder holds, the command that wrote it).
FOLDER_KINDS = {
    "run": ("a training run", "ppo-jax train"),
    "sweep": ("a sweep", "ppo-jax sweep"),
    "compare": ("an objective comparison", "ppo-jax compare"),
    "rlhf": ("a language-model run", "ppo-jax rlhf"),
}
_RUN_ENTRIES = ("checkpoints", "summary.json", "metrics.csv", "config.json")
_RLHF_ENTRIES = ("rlhf.json", "policy.msgpack", "rlhf.png")


def folder_kind(folder: str | os.PathLike) -> tuple[str, str] | None:
    """(kind of `FOLDER_KINDS`, the entry that shows it) of what `folder` holds, or None when it
    holds nothing a command wrote. An rlhf comparison is a compare.json beside variant folders
    that hold rlhf runs."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for name in ("sweep.json", "sweep_plan.json"):  # a finished sweep, or one that has started
        if (folder / name).exists():
            return "sweep", name
    if (folder / "compare.json").exists():
        rlhf = any(any((sub / name).exists() for name in _RLHF_ENTRIES) for sub in folder.iterdir() if sub.is_dir())
        return ("rlhf" if rlhf else "compare"), "compare.json"
    if (folder / "compare_plan.json").exists():  # a comparison that has started
        return "compare", "compare_plan.json"
    found = next((name for name in _RLHF_ENTRIES if (folder / name).exists()), None)
    if found:
        return "rlhf", found
    found = next((name for name in _RUN_ENTRIES if (folder / name).exists()), None)
    found = found or next((p.name for p in sorted(folder.glob("policy-seed*.npz"))), None)
    return ("run", found) if found else None


def refuse_other_kind(path: str | os.PathLike | None, kind: str, flag: str = "out") -> None:
    """A command may not write into, or read as its own, a folder that another command wrote:
    `ConfigError` naming `flag`, what the folder holds and the entry that shows it (also with
    --overwrite, which replaces only a folder of the command's own kind)."""
    found = None if path is None else folder_kind(path)
    if found is None or found[0] == kind:
        return
    (held, by), (wanted, _) = FOLDER_KINDS[found[0]], FOLDER_KINDS[kind]
    held = f"{path} holds {held} ({by}: {found[1]}), not {wanted}"
    raise ConfigError(flag, held + ("; choose another --out" if flag == "out" else ""))


def claim_folder(out: str | os.PathLike | None, markers: Sequence[str], kind: str, overwrite: bool) -> None:
    """Refuse an output folder that already holds `kind` (any of `markers` exists) unless
    `overwrite`, in which case those entries are deleted. `ConfigError` naming the flag."""
    if out is None:
        return
    folder = Path(out)
    found = [name for name in markers if (folder / name).exists()]
    if found and not overwrite:
        raise ConfigError(
            "out",
            f"{folder} already holds {kind} ({', '.join(found)}); replace it with --overwrite, or choose another --out",
        )
    for name in found:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def read_json(path: Path, what: str) -> Any:
    """The JSON in `path`; `RunFileError` naming the file when it is missing, unreadable, empty,
    truncated or not JSON (`what` says what the file should hold)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunFileError(path, f"missing ({what})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(path, f"unreadable ({what}): {err}") from None
    if not text.strip():
        raise RunFileError(path, f"empty; it should hold {what}")
    try:
        return json.loads(text)
    except ValueError as err:
        raise RunFileError(path, f"not valid JSON ({err.msg} at line {err.lineno}); it should hold {what}") from None


def config_record(record: Any, path: Path, given: dict[str, Any] | None = None):
    """(PPOConfig, seeds, shard_envs) from a run's `config.json` record; `RunFileError` naming the
    file when it is not one (wrong type, missing or invalid fields), `ConfigError` naming a part
    that cannot be rebuilt (an unimportable reference, or an object recorded as `unrecorded` and
    not in `given`)."""
    from ppo_jax import plugins
    from ppo_jax.config import config_from_record

    if not isinstance(record, dict) or not isinstance(record.get("seeds"), list) or "env" not in record:
        raise RunFileError(path, "is not a ppo_jax run config (a JSON object with env, seeds and the PPOConfig fields)")
    plugins.check_rebuildable(record, path.parent, given)
    for kind in plugins.KINDS:  # an unimportable reference is named as such, not as a bad file
        if plugins.is_reference(record.get(kind)):
            plugins.load_reference(record[kind], kind)
    fields = {k: v for k, v in record.items() if k not in ("seeds", "shard_envs", "unrecorded")}
    try:
        config = config_from_record(fields)
    except (ConfigError, TypeError) as err:
        raise RunFileError(path, f"holds an invalid config ({err})") from None
    seeds = record["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise RunFileError(path, f"holds invalid seeds {seeds!r}")
    return config, seeds, bool(record.get("shard_envs", False))


def params_sha256(params: Any) -> str:
    """SHA-256 over the bytes of every parameter leaf, in pytree order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def final_returns(episode_return: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Per-run mean episodic return over the last `fraction` of updates.

    episode_return: [U, S] (NaN where no episode ended in an update) -> [S]. If no episode ended
    in that window the last finite value before it is used (NaN if there is none).
    """
    returns = np.asarray(episode_return, np.float64)
    window = max(1, int(np.ceil(returns.shape[0] * fraction)))
    tail = returns[-window:]
    out = np.full(returns.shape[1], np.nan)
    for s in range(returns.shape[1]):
        finite = tail[np.isfinite(tail[:, s]), s]
        if finite.size:
            out[s] = finite.mean()
        else:
            earlier = returns[np.isfinite(returns[:, s]), s]
            out[s] = earlier[-1] if earlier.size else np.nan
    return out


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Replace NaNs along axis 0 by the last finite value (leading NaNs stay)."""
    x = np.array(x, np.float64)
    for t in range(1, x.shape[0]):
        x[t] = np.where(np.isfinite(x[t]), x[t], x[t - 1])
    return x


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename); NaN/Inf become null."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)


def write_metrics_csv(path: Path, metrics: Mapping[str, np.ndarray], seeds: Sequence[int]) -> None:
    """One row per (seed, update): columns seed, update, then every metric. Arrays [U, S]."""
    names = list(metrics)
    num_updates = np.asarray(metrics[names[0]]).shape[0]
    arrays = {n: np.asarray(metrics[n]) for n in names}
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "update", *names])
        for s, seed in enumerate(seeds):
            for u in range(num_updates):
                writer.writerow([seed, u + 1, *(f"{arrays[n][u, s]:.6g}" for n in names)])
    os.replace(tmp, path)


def read_plan(folder: str | os.PathLike, kind: str, plan_file: str, keys: tuple[str, ...]):
    """(folder, record, PPOConfig, seeds) of the stopped `kind` folder ("sweep", "compare") that
    `--resume` names, read from its `plan_file`: `ConfigError` when the folder is missing or
    another command's, `RunFileError` when the plan is not a JSON object holding `keys`."""
    folder, noun = Path(folder), {"sweep": "sweep", "compare": "comparison"}[kind]
    if not folder.is_dir():
        raise ConfigError("resume", f"{noun} folder {folder} does not exist")
    refuse_other_kind(folder, kind, "resume")
    path = folder / plan_file
    if not path.exists():
        raise ConfigError("resume", f"{folder} holds no {plan_file}: it is not a {noun} folder this ppo_jax can resume")
    record = read_json(path, f"the {noun}'s plan")
    if not isinstance(record, dict) or not set(keys) <= set(record):
        raise RunFileError(path, f"is not a {noun} plan (a JSON object with {', '.join(keys[:-1])} and {keys[-1]})")
    config, seeds, _ = config_record({**record["config"], "seeds": record["seeds"]}, path)
    return folder, record, config, seeds
