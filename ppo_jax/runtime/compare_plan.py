"""A comparison's plan: O objectives × S seeds checked, its folder claimed, before anything
compiles (`plan_compare`), or rebuilt from a stopped comparison's `compare_plan.json`
(`plan_compare_resume`). `runtime.compare` runs it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh

from ppo_jax.config import OBJECTIVE_NAMES, PPOConfig, default_config
from ppo_jax.errors import ConfigError
from ppo_jax.plugins import resolve_objective
from ppo_jax.runtime import files, folder_lock
from ppo_jax.runtime.distributed import check_divisible, run_mesh

PLAN_FILE = "compare_plan.json"  # the comparison's request: base config, objectives, seeds, options
ARMS_DIR = "arms"  # one training run's folder per objective
COMPARE_FILES = ("compare.json", "compare.png", PLAN_FILE, ARMS_DIR)


def objective_config(base: PPOConfig, objective: str, options: dict[str, Any] | None = None) -> PPOConfig:
    """`base` with `objective` (a shipped name or a reference) and those of `options` that the
    objective declares; on-policy objectives get one epoch of one minibatch."""
    record = resolve_objective(objective)
    own = {f.name for f in record.fields}
    dropped = {"env", "num_epochs", "num_minibatches"} | {f.name for f in resolve_objective(base.objective).fields}
    fields = {k: v for k, v in base.to_dict().items() if k not in dropped or k in own}
    fields.update({k: v for k, v in (options or {}).items() if k in own})
    fields["objective"] = objective
    if not record.on_policy:
        fields.update(num_epochs=base.num_epochs, num_minibatches=base.num_minibatches)
    return default_config(base.env, **fields)


def arm_mesh(num_seeds: int) -> Mesh:
    """The run mesh an arm's seeds are split over: the most devices whose count divides the seeds."""
    return run_mesh(jax.devices()[: math.gcd(num_seeds, jax.device_count())])


def arm_dir_name(objective: str) -> str:
    """The folder name of an objective's arm: its name, a reference's `:` and other characters
    unsafe in a file name replaced by `_` (examples.dual_clip:OBJECTIVE -> examples.dual_clip_OBJECTIVE)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", objective)


class ComparePlan(NamedTuple):
    """A checked comparison: everything `run_compare` needs, decided before anything compiles."""

    config: PPOConfig  # the base config
    objectives: tuple[str, ...]  # O names or references
    seeds: tuple[int, ...]  # S
    options: dict  # values of the objectives' own fields
    configs: tuple[PPOConfig, ...]  # each arm's config (`objective_config`)
    mesh: Mesh  # the devices each arm's seeds are split over
    out: Path | None = None  # the comparison's folder (None: nothing written, no checkpoints)
    checkpoint_every: int | None = None
    keep: int | None = None
    resume: bool = False  # continue a stopped comparison in `out`

    def arm_dir(self, i: int) -> Path | None:
        return None if self.out is None else self.out / ARMS_DIR / arm_dir_name(self.objectives[i])

    def request(self) -> dict[str, Any]:
        """compare_plan.json's content."""
        return {
            "config": self.config.to_dict(),
            "objectives": list(self.objectives),
            "seeds": list(self.seeds),
            "options": dict(self.options),
            "checkpoint_every": self.checkpoint_every,
            "keep": self.keep,
            "arms": {o: f"{ARMS_DIR}/{arm_dir_name(o)}" for o in self.objectives},
        }


def _positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def plan_compare(
    config: PPOConfig,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    seeds: Sequence[int] = tuple(range(8)),
    options: dict[str, Any] | None = None,
    mesh: Mesh | None = None,
    *,
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = None,
    overwrite: bool = False,
) -> ComparePlan:
    """Check a comparison and claim its folder; raises `ConfigError` before anything compiles.
    A folder holding a comparison is refused unless `overwrite` (its files are removed)."""
    objectives, seeds = tuple(objectives), tuple(int(s) for s in seeds)
    names = [arm_dir_name(o) for o in objectives]
    if not objectives or len(set(names)) < len(names):
        raise ConfigError("objectives", f"name each objective once, got {', '.join(objectives) or 'none'}")
    if not seeds:
        raise ConfigError("seeds", "give at least one seed")
    configs = tuple(objective_config(config, o, options) for o in objectives)  # all checked before compiling
    mesh = arm_mesh(len(seeds)) if mesh is None else mesh
    check_divisible(len(seeds), mesh.size, "seeds", "seeds")
    for name, value in (("checkpoint_every", checkpoint_every), ("keep", keep)):
        _positive(name, value)
    if checkpoint_every is not None and out is None:
        raise ConfigError("checkpoint_every", "checkpoints go into the comparison's folder: give out= (--out)")
    if out is not None:
        files.refuse_other_kind(out, "compare")
        with folder_lock.holding(out) as out:  # created, checked writable, held until `run_compare` ends
            files.claim_folder(out, COMPARE_FILES, "an objective comparison", overwrite)
    return ComparePlan(config, objectives, seeds, dict(options or {}), configs, mesh, out, checkpoint_every, keep)


def plan_compare_resume(
    folder: str | Path, checkpoint_every: int | None = None, keep: int | None = None, mesh: Mesh | None = None
) -> ComparePlan:
    """The plan of a stopped comparison from its `compare_plan.json` (objectives, seeds, options,
    base config; `checkpoint_every` and `keep` as recorded unless given)."""
    folder, record, config, seeds = files.read_plan(folder, "compare", PLAN_FILE, ("config", "objectives", "seeds"))
    every = record.get("checkpoint_every") if checkpoint_every is None else checkpoint_every
    keep = record.get("keep") if keep is None else keep
    for name, value in (("checkpoint_every", every), ("keep", keep)):
        _positive(name, value)
    plan = plan_compare(config, record["objectives"], seeds, record.get("options") or {}, mesh)
    with folder_lock.holding(folder, "resume") as out:  # until `run_compare` ends
        return plan._replace(out=out, checkpoint_every=every, keep=keep, resume=True)
