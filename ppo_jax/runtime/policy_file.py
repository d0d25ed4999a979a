"""A small, code-free policy export: `export_policy` writes a policy's parameters, normalisation
statistics and its family's description to one `.npz` file (arrays plus a JSON string, no
pickle); `load_policy` turns it into `act(obs)` (feed-forward) or `act(obs, state) -> (action,
state)` (recurrent)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ppo_jax.engine.evaluate import Acting, policy_action
from ppo_jax.engine.parts import policy_from_description
from ppo_jax.envs import EnvSpec, RunningStats, action_distribution
from ppo_jax.errors import ConfigError, RunFileError
from ppo_jax.policies import is_recurrent
from ppo_jax.runtime.policy_arrays import POLICY_FORMAT, final_policy_paths, read_policy_arrays


def export_policy(
    path: str | os.PathLike,
    acting: Acting,
    params: Any,
    obs_stats: RunningStats | None,
    env: str,
    description: dict[str, Any] | None = None,
):
    """Write a single-run policy to `path` (.npz: parameter arrays + JSON description; no pickle).
    `description`: how to rebuild the family (default: its `describe()`)."""
    path = Path(path)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    if obs_stats is not None:
        arrays["obs_mean"] = np.asarray(obs_stats.mean)
        arrays["obs_var"] = np.asarray(obs_stats.var)
    spec = acting.spec
    meta = {
        "format": POLICY_FORMAT,
        "env": env,
        "policy": acting.policy.describe() if description is None else description,
        "obs_shape": list(spec.obs_shape),
        "discrete": spec.discrete,
        "action_dim": spec.action_dim,
        "action_shape": list(spec.action_shape),
        "action_low": None if spec.action_low is None else list(spec.action_low),
        "action_high": None if spec.action_high is None else list(spec.action_high),
    }
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


class Policy(NamedTuple):
    """A loaded policy. Feed-forward: `act(obs)` gives the deterministic env action for raw
    observations [*obs_shape] or [B, *obs_shape]. Recurrent: `act(obs, state)` gives (action,
    state); state None starts an episode. Actions are sampled when `key` is given."""

    acting: Acting
    params: Any
    obs_stats: RunningStats | None
    env: str

    @property
    def recurrent(self) -> bool:
        return is_recurrent(self.acting.policy)

    def act(self, obs, state: Any = None, key: jax.Array | None = None):
        obs = jnp.asarray(obs)
        single = obs.ndim == len(self.acting.spec.obs_shape)
        batch = obs[None] if single else obs
        reset = jnp.full(batch.shape[:1], state is None)
        carry = self.acting.policy.initial_carry(batch.shape[0]) if state is None else state
        stochastic = key is not None
        key = jax.random.key(0) if key is None else key
        action, carry = _act(self.acting, self.params, self.obs_stats, carry, batch, reset, key, stochastic)
        action = action[0] if single else action
        return (action, carry) if self.recurrent else action


@functools.partial(jax.jit, static_argnums=(0, 7))
def _act(acting, params, obs_stats, carry, obs, reset, key, stochastic):
    return policy_action(acting, params, obs_stats, carry, obs, reset, key, stochastic)


def _description(meta: dict[str, Any]) -> dict[str, Any]:
    """The policy family's description (format 1 files held an mlp's fields at the top level)."""
    if meta.get("format") == 1:
        keys = ("action_dim", "discrete", "obs_ndim", "hidden_sizes", "activation")
        return {"family": "mlp", **{k: meta[k] for k in keys}}
    return meta["policy"]


def _read_policy_file(path: Path, array=jnp.asarray):
    """(meta, flat params, obs stats) of a policy file, arrays made by `array` (device arrays by
    default); `RunFileError` naming the file when it is not a policy file (`read_policy_arrays`)."""
    meta, flat, mean, var = read_policy_arrays(path, array)
    stats = None if mean is None else RunningStats(mean, var, array(np.float32(1)))
    return meta, flat, stats


def load_policy(path: str | os.PathLike) -> Policy:
    """Read an `export_policy` file. Only arrays and JSON are read; the only code run is that of a
    policy family the file names by reference (`package.module:attribute`, imported like
    `--network` imports it). Raises `RunFileError` naming the file when it is not a policy file of
    a known format, `ConfigError` naming a reference that cannot be imported."""
    path = Path(path)
    meta, flat, stats = _read_policy_file(path)
    params = traverse_util.unflatten_dict(flat, sep="/")
    try:
        low = None if meta["action_low"] is None else tuple(meta["action_low"])
        high = None if meta["action_high"] is None else tuple(meta["action_high"])
        spec = EnvSpec(
            tuple(meta["obs_shape"]), meta["discrete"], meta["action_dim"], tuple(meta["action_shape"]), low, high
        )
        acting = Acting(policy_from_description(_description(meta), spec), action_distribution(spec), spec)
    except ConfigError:  # a family named by a reference that cannot be imported: named as such
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise RunFileError(path, f"policy description is incomplete or invalid ({err!r})") from None
    return Policy(acting, params, stats, meta["env"])


class FinalPolicies(NamedTuple):
    """A finished run's exported policies stacked over its seeds (leaves [S, ...])."""

    config: Any  # the run's PPOConfig
    seeds: list[int]
    update: int
    params: Any
    obs_stats: RunningStats | None


def final_policies(run_dir: str | os.PathLike) -> FinalPolicies | None:
    """The parameters of a run's newest checkpoint read from its `policy-seed<S>.npz` files, when
    they hold exactly those (`policy_arrays.final_policy_paths`); None otherwise (read the
    checkpoint instead). Reading them takes neither orbax nor a trace of the training state."""
    from ppo_jax.runtime import files

    run_dir = Path(run_dir)
    try:
        record = files.read_json(run_dir / "config.json", "the run's config")
        config, seeds, _ = files.config_record(record, run_dir / "config.json")
        paths = final_policy_paths(run_dir, seeds, config.num_updates)
        if paths is None:
            return None
        read = [_read_policy_file(p, np.asarray) for p in paths]  # NumPy: no computation before the program
    except (RunFileError, OSError, ValueError, KeyError, TypeError):
        return None
    if any(meta.get("env") != config.env for meta, _, _ in read):
        return None
    params = [traverse_util.unflatten_dict(flat, sep="/") for _, flat, _ in read]
    params = jax.tree.map(lambda *xs: np.stack(xs), *params)
    stats = None
    if config.normalize_obs:
        if any(s is None for _, _, s in read):
            return None
        mean, var = (np.stack([getattr(s, f) for _, _, s in read]) for f in ("mean", "var"))
        stats = RunningStats(mean, var, np.ones(len(seeds), np.float32))
    return FinalPolicies(config, list(seeds), config.num_updates, params, stats)
