"""The arrays of exported policy files (`policy-seed<S>.npz`), read and checked with NumPy alone:
no policy family, environment or Flax is built or imported, so `ppo-jax eval` can read a run's
policies before deciding whether it needs them. `runtime.policy_file` builds policies from them."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ppo_jax.errors import RunFileError
from ppo_jax.runtime.files import read_json

POLICY_FORMAT = 2  # 1: an mlp policy described by top-level fields (still readable)


class PolicyArrays(NamedTuple):
    """One policy file's contents: its JSON description, its parameters by flat name
    (`"actor/Dense_0/kernel"`, ...) and its frozen observation statistics (None without)."""

    meta: dict[str, Any]
    flat_params: dict[str, Any]
    obs_mean: Any
    obs_var: Any


def read_policy_arrays(path: str | os.PathLike, array=np.asarray) -> PolicyArrays:
    """The arrays of a policy file, made by `array`; `RunFileError` naming the file when it is
    missing, not an .npz archive, holds pickled objects, lacks the policy's layout or is of an
    unknown format."""
    path = Path(path)
    not_policy = "is not a ppo_jax policy file (written by ppo-jax train as policy-seed<S>.npz)"
    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta_json" not in data.files or not any(k.startswith("params/") for k in data.files):
                raise RunFileError(path, f"{not_policy}: no meta_json and params/ arrays")
            meta = json.loads(bytes(data["meta_json"]).decode())
            flat = {k[len("params/") :]: array(data[k]) for k in data.files if k.startswith("params/")}
            mean = var = None
            if "obs_mean" in data.files:
                mean, var = array(data["obs_mean"]), array(data["obs_var"])
    except FileNotFoundError:
        raise RunFileError(path, "missing") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise RunFileError(path, f"{not_policy} ({type(err).__name__}: {err})"[:300]) from None
    if not isinstance(meta, dict) or meta.get("format") not in (1, POLICY_FORMAT):
        found = meta.get("format") if isinstance(meta, dict) else None
        raise RunFileError(path, f"unknown policy format {found!r}; this ppo_jax reads formats 1 and {POLICY_FORMAT}")
    return PolicyArrays(meta, flat, mean, var)


def final_policy_paths(run_dir: Path, seeds: list[int], num_updates: int) -> list[Path] | None:
    """The run's `policy-seed<S>.npz` files when they hold the parameters of its newest checkpoint:
    the run finished (its summary says it exported policies after `num_updates` updates), its
    newest checkpoint is that update and every seed's file was written after every file of that
    checkpoint (one changed since, e.g. damaged, sends eval to the checkpoint, which reports it).
    A sweep's run folder (its summary names the sweep) has no checkpoint: its files hold its final
    parameters. None otherwise; `RunFileError`/`OSError` when a file cannot be read."""
    summary = read_json(run_dir / "summary.json", "the run's summary")
    paths = [run_dir / f"policy-seed{seed}.npz" for seed in seeds]
    if not summary.get("policies_exported") or not num_updates == summary["num_updates"]:
        return None
    if not ("sweep" in summary and not (run_dir / "checkpoints").exists()):
        steps = [p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
        newest = max(steps, key=lambda p: int(p.name))
        written = max(f.stat().st_mtime_ns for f in (newest, *newest.rglob("*")))  # a file changed since counts
        if int(newest.name) != num_updates or any(p.stat().st_mtime_ns < written for p in paths):
            return None
    return paths
