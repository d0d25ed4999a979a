"""The policy-family protocol: what the training program needs from an actor-critic network.

A policy family is an object with three methods (the carry is the recurrent state; it is `()`
for feed-forward networks):

    init(key, obs_example, init_log_std=0.0) -> params
        obs_example [B, *obs_shape]; `init_log_std` sets a Gaussian head's log-std (continuous
        actions) and may be ignored otherwise.
    initial_carry(num) -> carry
        the state at an episode start for `num` environments (leaves [num, ...]).
    apply(params, carry, obs, reset) -> (carry, dist, value)
        a batch of steps: obs [*B, *obs_shape], reset [*B] bool (True where obs is the first of
        an episode: the carry is replaced by the initial one first), carry [*B, ...]. `dist` is
        the head output of the action distribution (`ppo_jax.core.distributions`: logits
        [*B, A], or (mean, log_std) [*B, D]); value [*B]. The engine calls it with
          B = [N]     one step of N envs (rollout, evaluation), every family;
          B = [T, N]  the bootstrap values V(s'_t) of a rollout (`state_values`, when the family
                      has no `value`): obs s'_t [T, N, ...], carry [T, N, ...] (the carry after
                      step t), reset all False [T, N], every family;
          B = [T, N] or [M], reset=None   a feed-forward family (empty carry) over a rollout's
                      stored steps or a shuffled minibatch of M steps (nothing to reset);
        a recurrent family without `unroll` is scanned over time with B = [N].

and, optionally, faster forms the functions below use when present:

    unroll(params, carry, obs, reset)  over a sequence: obs [T, N, ...], reset [T, N] -> dist, value [T, N]
    value(params, carry, obs)          V(s) only (the bootstrap values of GAE)
    rollout_apply(params)              an `apply(carry, obs, reset)` prepared once per rollout
    describe()                         JSON-able {"family": name, ...} for policy export

Feed-forward families (empty carry) are applied to any batch shape at once; recurrent ones are
scanned over time from the carry stored at the rollout's start, with the same resets.

A family is named by a `Family` record: its name, `make(config, spec) -> family object`, an
optional `from_description` (rebuilds an exported policy) and the hyperparameters it declares
(`ppo_jax.fields.Field`). A user's record is named `--network package.module:attribute`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax


class PolicyFamily(Protocol):
    """An actor-critic network: see the module docstring for shapes."""

    def init(self, key: jax.Array, obs: jax.Array, init_log_std: Any = 0.0) -> Any: ...

    def initial_carry(self, num: int) -> Any: ...

    def apply(self, params: Any, carry: Any, obs: jax.Array, reset: jax.Array) -> tuple[Any, Any, jax.Array]: ...


class Family(NamedTuple):
    """A policy family as a part of a run: what `--network NAME` names."""

    name: str
    make: Callable[[Any, Any], PolicyFamily]  # (config, EnvSpec) -> family object
    from_description: Callable[[dict], PolicyFamily] | None = None  # rebuilds a `describe()` record
    fields: tuple = ()  # `ppo_jax.fields.Field`s it reads from the config (`config.NAME`)


def is_recurrent(policy: PolicyFamily) -> bool:
    """True when the family keeps a state between steps (its initial carry has leaves)."""
    return bool(jax.tree.leaves(jax.eval_shape(lambda: policy.initial_carry(1))))


def reset_carry(policy: PolicyFamily, carry: Any, reset: jax.Array) -> Any:
    """carry [*B, ...] with the entries where `reset` [*B] is True replaced by the initial carry."""
    initial = policy.initial_carry(1)

    def pick(init, current):
        mask = reset.reshape(reset.shape + (1,) * (current.ndim - reset.ndim))
        return jnp.where(mask, init[0], current)

    return jax.tree.map(pick, initial, carry)


def unroll(policy: PolicyFamily, params: Any, carry: Any, obs: jax.Array, reset: jax.Array | None):
    """(dist, value) over a batch of steps. Feed-forward: one `apply` over obs [B, ...] (any
    leading shape). Recurrent: obs [T, N, ...], reset [T, N], carry [N, ...] (the state before
    step 0), scanned over T; the family's own `unroll` is used when it has one."""
    if hasattr(policy, "unroll"):
        return policy.unroll(params, carry, obs, reset)
    if not jax.tree.leaves(carry):
        _, dist, value = policy.apply(params, carry, obs, reset)
        return dist, value
    step = functools.partial(_scan_step, policy, params)
    _, (dist, value) = lax.scan(step, carry, (obs, reset))
    return dist, value


def _scan_step(policy: PolicyFamily, params: Any, carry: Any, xs):
    obs, reset = xs
    carry, dist, value = policy.apply(params, carry, obs, reset)
    return carry, (dist, value)


def state_values(policy: PolicyFamily, params: Any, carry: Any, obs: jax.Array, batch: tuple[int, ...]) -> jax.Array:
    """V(s) [*batch] for obs [*batch, *obs_shape] continuing from `carry` [*batch, ...] (no
    reset): the family's `value` when it has one, else `apply`'s value."""
    if hasattr(policy, "value"):
        return policy.value(params, carry, obs)
    return policy.apply(params, carry, obs, jnp.zeros(batch, bool))[2]


def rollout_apply(policy: PolicyFamily, params: Any):
    """`apply(carry, obs, reset)` for the rollout: the family's prepared form when it has one
    (e.g. the MLP packs actor and critic once per rollout), else `apply` bound to `params`."""
    if hasattr(policy, "rollout_apply"):
        return policy.rollout_apply(params)
    return functools.partial(policy.apply, params)
