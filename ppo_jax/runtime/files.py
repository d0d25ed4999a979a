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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np


def default_run_dir(env: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<env>-<YYYYmmdd-HHMMSS> (a numeric suffix is added if it exists)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{env}-{stamp}"
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
