"""Evaluation of a trained policy and a small, code-free policy export.

`evaluate` is pure and jittable: it plays `num_episodes` episodes in parallel with frozen
observation-normalisation statistics and returns each episode's undiscounted return.
`export_policy` writes parameters, normalisation statistics and the network description to one
`.npz` file (arrays plus a JSON string, no pickle); `load_policy` turns it into `act(obs)`.
"""

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
from jax import lax

from ppo_jax.envs import EnvSpec, RunningStats, env_action, normalize
from ppo_jax.policies.mlp import ActorCritic, mode_action, sample_action

POLICY_FORMAT = 1


class EvalResult(NamedTuple):
    """Per-episode returns and lengths [E]."""

    returns: jax.Array
    lengths: jax.Array


def policy_action(network: ActorCritic, spec: EnvSpec, params, obs_stats: RunningStats | None, obs, key, stochastic):
    """The env action for raw `obs` [..., *obs_shape]: normalise, forward, mode (or sample), clip."""
    x = obs.astype(jnp.float32) if obs_stats is None else normalize(obs, obs_stats)
    dist = network.apply(params, x).dist
    action = sample_action(key, dist, spec.discrete)[0] if stochastic else mode_action(dist, spec.discrete)
    return env_action(action, spec)


def evaluate(
    env: Any,
    env_params: Any,
    network: ActorCritic,
    spec: EnvSpec,
    params: Any,
    obs_stats: RunningStats | None,
    key: jax.Array,
    num_episodes: int,
    max_steps: int,
    stochastic: bool = False,
) -> EvalResult:
    """Play `num_episodes` episodes (one per parallel env) for at most `max_steps` steps each.

    Only the first episode of each env counts; the return is the sum of raw rewards until it
    ends (terminated or truncated). Static: env, network, spec, num_episodes, max_steps, stochastic.
    """
    key_reset, key_run = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, num_episodes), env_params)
    act = jax.vmap(lambda o, k: policy_action(network, spec, params, obs_stats, o, k, stochastic))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, key_t):
        obs, state, ret, length, running = carry
        key_a, key_s = jax.random.split(key_t)
        action = act(obs, jax.random.split(key_a, num_episodes))
        obs, state, reward, terminated, truncated, _ = step(
            jax.random.split(key_s, num_episodes), state, action, env_params
        )
        ret = ret + jnp.where(running, reward, 0.0)
        length = length + running.astype(jnp.int32)
        running = running & ~(jnp.asarray(terminated, bool) | jnp.asarray(truncated, bool))
        return (obs, state, ret, length, running), None

    init = (
        obs,
        state,
        jnp.zeros(num_episodes, jnp.float32),
        jnp.zeros(num_episodes, jnp.int32),
        jnp.ones(num_episodes, bool),
    )
    (_, _, returns, lengths, _), _ = lax.scan(body, init, jax.random.split(key_run, max_steps))
    return EvalResult(returns, lengths)


def max_episode_steps(env_params: Any, default: int = 1000) -> int:
    """The env's time limit when it has one (gymnax `max_steps_in_episode`), else `default`."""
    return int(getattr(env_params, "max_steps_in_episode", default))


def export_policy(
    path: str | os.PathLike,
    network: ActorCritic,
    spec: EnvSpec,
    params: Any,
    obs_stats: RunningStats | None,
    env: str,
) -> Path:
    """Write a single-run policy to `path` (.npz: parameter arrays + JSON description; no pickle)."""
    path = Path(path)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    if obs_stats is not None:
        arrays["obs_mean"] = np.asarray(obs_stats.mean)
        arrays["obs_var"] = np.asarray(obs_stats.var)
    meta = {
        "format": POLICY_FORMAT,
        "env": env,
        "action_dim": network.action_dim,
        "discrete": network.discrete,
        "obs_ndim": network.obs_ndim,
        "hidden_sizes": list(network.hidden_sizes),
        "activation": network.activation,
        "obs_shape": list(spec.obs_shape),
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
    """A loaded policy: `act(obs)` gives the deterministic env action for raw observations."""

    network: ActorCritic
    spec: EnvSpec
    params: Any
    obs_stats: RunningStats | None
    env: str

    def act(self, obs, key: jax.Array | None = None):
        """Env action(s) for `obs` [*obs_shape] or [B, *obs_shape]; sampled when `key` is given."""
        obs = jnp.asarray(obs)
        stochastic = key is not None
        key = jax.random.key(0) if key is None else key
        return _act(self.network, self.spec, self.params, self.obs_stats, obs, key, stochastic)


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _act(network, spec, params, obs_stats, obs, key, stochastic):
    return policy_action(network, spec, params, obs_stats, obs, key, stochastic)


def load_policy(path: str | os.PathLike) -> Policy:
    """Read an `export_policy` file. Only arrays and JSON are read: no code is executed."""
    with np.load(Path(path), allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta_json"]).decode())
        if meta.get("format") != POLICY_FORMAT:
            raise ValueError(f"{path}: unknown policy format {meta.get('format')!r}")
        flat = {k[len("params/") :]: jnp.asarray(data[k]) for k in data.files if k.startswith("params/")}
        stats = None
        if "obs_mean" in data.files:
            stats = RunningStats(jnp.asarray(data["obs_mean"]), jnp.asarray(data["obs_var"]), jnp.float32(1))
    params = traverse_util.unflatten_dict(flat, sep="/")
    network = ActorCritic(
        meta["action_dim"], meta["discrete"], meta["obs_ndim"], tuple(meta["hidden_sizes"]), meta["activation"]
    )
    low = None if meta["action_low"] is None else tuple(meta["action_low"])
    high = None if meta["action_high"] is None else tuple(meta["action_high"])
    spec = EnvSpec(
        tuple(meta["obs_shape"]), meta["discrete"], meta["action_dim"], tuple(meta["action_shape"]), low, high
    )
    return Policy(network, spec, params, stats, meta["env"])
