"""The shape every suite adapter shares: a gymnax ≥ 1.0 `Environment` around a suite's own env.

A subclass defines two methods on the suite's own state (`inner`), both without auto-reset:

    suite_reset(key) -> (inner, raw_obs)
    suite_step(key, inner, action) -> (inner, raw_obs, reward, terminated, truncated)

where `terminated` means the next state is terminal (no bootstrap) and `truncated` means the
suite's own time limit cut the episode. gymnax's `step` then adds the auto-reset and
`info["final_observation"]` (the pre-reset observation), and the rollout's pre-drawn resets apply
as for any gymnax env. Observations become one float32 array (`encode_obs`): a vector, or an image
[H, W, C] for the `cnn` family; a suite's legal-action mask is appended to the flat vector and
`legal_action_mask_size` says how many trailing entries it takes. Multi-discrete actions become one
Discrete over their product (row-major, as a flattened joint mask is laid out).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from ppo_jax.errors import ConfigError

# A multi-discrete action space is mapped to one Discrete only up to this many joint actions.
MAX_JOINT_ACTIONS = 4096


@struct.dataclass
class SuiteParams(environment.EnvParams):
    """gymnax params of an adapted env: only the suite's own episode length (the suite's own
    parameters live in the adapter, fixed when it is made)."""

    max_steps_in_episode: int = 1000


@struct.dataclass
class SuiteState(environment.EnvState):
    """The suite's own state and whether the step that produced it hit the time limit."""

    inner: Any
    truncated: jax.Array


class SuiteEnv(environment.Environment):
    """Base of the suite adapters (see the module docstring)."""

    suite: str = ""  # registry prefix, e.g. "craftax"

    def __init__(
        self,
        name: str,
        episode_length: int,
        space: spaces.Discrete | spaces.Box,
        nvec: tuple[int, ...] | None = None,
        mask_size: int = 0,
    ):
        super().__init__()
        self.env_id = name
        self.episode_length = int(episode_length)
        self.space = space
        self.nvec = nvec  # sizes of a multi-discrete action, None otherwise
        self.legal_action_mask_size = int(mask_size)
        template = jax.eval_shape(self.suite_reset, jax.random.key(0))[0]
        self._template = jax.tree.flatten(template)  # (leaf shapes, treedef) of the suite's state
        self._has_empty = any(x.size == 0 for x in self._template[0])

    # -- what a suite defines -------------------------------------------------------------
    def suite_reset(self, key: jax.Array) -> tuple[Any, Any]:
        raise NotImplementedError

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        raise NotImplementedError

    def encode_obs(self, raw: Any) -> jax.Array:
        """The suite's observation as one float32 array (default: arrays kept, pytrees flattened)."""
        return encode_obs(raw)

    # -- gymnax interface -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.suite}/{self.env_id}"

    @property
    def default_params(self) -> SuiteParams:
        return SuiteParams(max_steps_in_episode=self.episode_length)

    def reset_env(self, key: jax.Array, params: SuiteParams):
        inner, raw = self.suite_reset(key)
        return self.encode_obs(raw), SuiteState(time=jnp.int32(0), inner=self.pack(inner), truncated=jnp.bool_(False))

    def step_env(self, key: jax.Array, state: SuiteState, action: jax.Array, params: SuiteParams):
        inner = self.unpack(state.inner)
        inner, raw, reward, terminated, truncated = self.suite_step(key, inner, self.decode_action(action))
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.asarray(truncated, bool)
        new = SuiteState(time=state.time + 1, inner=self.pack(inner), truncated=truncated)
        return self.encode_obs(raw), new, jnp.asarray(reward, jnp.float32), terminated, {}

    def pack(self, inner: Any) -> Any:
        """The suite's state as carried: zero-size leaves (MJX's empty fields) as None, since they
        hold nothing and checkpoints cannot store them."""
        return jax.tree.map(lambda x: None if x.size == 0 else x, inner) if self._has_empty else inner

    def unpack(self, packed: Any) -> Any:
        """The suite's state from `pack`'s form."""
        if not self._has_empty:
            return packed
        leaves = jax.tree.leaves(packed, is_leaf=lambda x: x is None)
        shapes, treedef = self._template
        filled = [jnp.zeros(t.shape, t.dtype) if x is None else x for x, t in zip(leaves, shapes, strict=True)]
        return jax.tree.unflatten(treedef, filled)

    def is_truncated(self, state: SuiteState, params: SuiteParams) -> jax.Array:
        return state.truncated

    def decode_action(self, action: jax.Array) -> jax.Array:
        """The suite's action: multi-discrete indices [len(nvec)] from one joint index."""
        if self.nvec is None:
            return action
        return jnp.stack(jnp.unravel_index(action, self.nvec)).astype(jnp.int32)

    def action_space(self, params: Any = None):
        return self.space

    def observation_space(self, params: Any = None) -> spaces.Box:
        shape = jax.eval_shape(lambda: self.reset_env(jax.random.key(0), self.default_params))[0].shape
        return spaces.Box(-jnp.inf, jnp.inf, tuple(shape), jnp.float32)

    @property
    def num_actions(self) -> int:
        return int(self.space.n) if isinstance(self.space, spaces.Discrete) else 0


class EpisodeWrappedEnv(SuiteEnv):
    """A suite env inside Brax's `EpisodeWrapper` (`self.inner_env`), as Brax and MuJoCo Playground
    build theirs: the wrapper's `info["truncation"]` marks the time-limit cut, any other `done`
    is a termination."""

    inner_env: Any

    def suite_reset(self, key: jax.Array):
        state = self.inner_env.reset(key)
        return state, state.obs

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array):
        state = self.inner_env.step(inner, action)
        truncated = state.info["truncation"] > 0
        terminated = (state.done > 0) & ~truncated
        return state, state.obs, state.reward, terminated, truncated


def encode_obs(raw: Any) -> jax.Array:
    """One float32 array: an array as it is; a dict with a "state" entry (MuJoCo Playground's
    actor observation) as that entry; any other pytree as its leaves flattened and concatenated
    in tree order."""
    if isinstance(raw, dict) and "state" in raw:
        raw = raw["state"]
    if isinstance(raw, (jax.Array, np.ndarray)):
        return jnp.asarray(raw, jnp.float32)
    return flatten_leaves(jax.tree.leaves(raw))


def flatten_leaves(leaves: Iterable[Any]) -> jax.Array:
    """Leaves raveled to float32 and concatenated into one vector."""
    parts = [jnp.ravel(jnp.asarray(x)).astype(jnp.float32) for x in leaves]
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.float32)


def discrete_space(name: str, nvec: tuple[int, ...]) -> tuple[spaces.Discrete, tuple[int, ...] | None]:
    """(Discrete space, multi-discrete sizes or None) for action sizes `nvec` (() for a plain
    Discrete given as a 1-tuple); refuses joint spaces above MAX_JOINT_ACTIONS."""
    total = math.prod(nvec)
    if total > MAX_JOINT_ACTIONS:
        raise ConfigError(
            "env",
            f"{name}: multi-discrete action space {list(nvec)} has {total} joint actions; "
            f"allowed: Discrete, Box, or multi-discrete with at most {MAX_JOINT_ACTIONS} joint actions",
        )
    return spaces.Discrete(int(total)), (tuple(int(n) for n in nvec) if len(nvec) > 1 else None)


def box_space(low: Any, high: Any, shape: tuple[int, ...]) -> spaces.Box:
    """A float32 Box with bounds broadcast to `shape`."""
    low = np.broadcast_to(np.asarray(low, np.float32), shape)
    high = np.broadcast_to(np.asarray(high, np.float32), shape)
    return spaces.Box(jnp.asarray(low), jnp.asarray(high), tuple(shape), jnp.float32)


def make_registered(suite: str, env_class: type, name: str, known: Iterable[str], **kwargs: Any):
    """(env, params) of `env_class(name, **kwargs)`, once `name` is found in the suite's own
    registry `known` (else the `unknown_name` error)."""
    if name not in known:
        raise unknown_name(suite, name, known)
    env = env_class(name, **kwargs)
    return env, env.default_params


def unknown_name(suite: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name that is not in the suite's own registry, with close matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(f'{suite}/{c}' for c in close)}? " if close else ""
    shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
    return ConfigError("env", f"unknown {suite} environment {name!r}; {hint}known: {shown}")
