"""Minibatch SGD shared by every trainer: epochs of shuffled minibatches, one optimizer step
each, with the cross-device reduction of a data-parallel update as a parameter.

- `Collective`: mean/sum/max over the devices that split one run's data (`axis=None`: one device,
  every reduction is the identity).
- Minibatch splits of a time-major batch [T, N, ...] (each sample used once per epoch):
  `shuffle_split` (all T·N samples shuffled together), `stratified_split` (each env's T steps
  shuffled; minibatch m takes T/M steps of every env: the same on any number of devices) and
  `sequence_split` (whole env sequences, for recurrent policies).
- `sgd_epochs(loss_fn, optimizer, carry, batch, key, ...)`: the epochs as one `lax.scan`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax


class Collective(NamedTuple):
    """Cross-device reductions over mesh axis `axis` (inside `shard_map`); None: one device."""

    axis: str | None = None

    def mean(self, tree: Any) -> Any:
        return tree if self.axis is None else lax.pmean(tree, self.axis)

    def sum(self, tree: Any) -> Any:
        return tree if self.axis is None else lax.psum(tree, self.axis)

    def max(self, tree: Any) -> Any:
        return tree if self.axis is None else lax.pmax(tree, self.axis)

    def size(self) -> int:
        """Number of devices (a Python int)."""
        return 1 if self.axis is None else lax.psum(1, self.axis)

    def index(self) -> jax.Array | int:
        """This device's position along the axis (0 on one device)."""
        return 0 if self.axis is None else lax.axis_index(self.axis)


LOCAL = Collective()


class OptCarry(NamedTuple):
    """The carry of the minibatch scans."""

    params: Any
    opt_state: Any


def shuffle_rows(num_minibatches: int, key: jax.Array, batch: Any) -> Any:
    """Shuffle the leading (sample) axis: leaves [B, ...] -> [M, B/M, ...] (e.g. completions)."""
    size = jax.tree.leaves(batch)[0].shape[0]
    perm = jax.random.permutation(key, size)
    return jax.tree.map(lambda x: jnp.take(x, perm, axis=0).reshape(num_minibatches, -1, *x.shape[1:]), batch)


def shuffle_split(
    num_minibatches: int, key: jax.Array, batch: Any, permutation: Callable = jax.random.permutation
) -> Any:
    """Flatten the [T, N] sample axes and shuffle by `permutation(key, n)` (the run's
    `fast_paths.Paths.permutation`): leaves [T, N, ...] -> [M, T·N/M, ...]."""
    leaves = jax.tree.leaves(batch)
    size = leaves[0].shape[0] * leaves[0].shape[1]
    perm = permutation(key, size)

    def split(x):
        x = x.reshape(size, *x.shape[2:])
        return jnp.take(x, perm, axis=0).reshape(num_minibatches, size // num_minibatches, *x.shape[1:])

    return jax.tree.map(split, batch)


def stratified_split(num_minibatches: int, env_ids: jax.Array, key: jax.Array, batch: Any) -> Any:
    """Each env shuffles its own T steps (key fold_in(key, env id)); minibatch m takes the m-th
    T/M of every env's steps: leaves [T, n, ...] -> [M, n·T/M, ...]. An env's order does not
    depend on which device holds it, so a run split over devices sees the same minibatches."""
    steps = jax.tree.leaves(batch)[0].shape[0]
    perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), steps))(env_ids)  # [n, T]

    def split(x):
        x = jax.vmap(lambda xi, p: jnp.take(xi, p, axis=0))(jnp.swapaxes(x, 0, 1), perms)  # [n, T, ...]
        x = x.reshape(x.shape[0], num_minibatches, steps // num_minibatches, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0).reshape(num_minibatches, -1, *x.shape[3:])

    return jax.tree.map(split, batch)


def sequence_split(num_minibatches: int, key: jax.Array, batch: Any, carry: Any) -> tuple[Any, Any]:
    """Minibatches of whole env sequences for recurrent policies: leaves [T, N, ...] ->
    [M, T, N/M, ...] and the start-of-rollout carry [N, ...] -> [M, N/M, ...], envs shuffled."""
    num_envs = jax.tree.leaves(batch)[0].shape[1]
    perm = jax.random.permutation(key, num_envs)
    size = num_envs // num_minibatches

    def split_time_major(x):
        x = jnp.take(x, perm, axis=1)
        return jnp.moveaxis(x.reshape(x.shape[0], num_minibatches, size, *x.shape[2:]), 1, 0)

    def split_env_major(x):
        return jnp.take(x, perm, axis=0).reshape(num_minibatches, size, *x.shape[1:])

    return jax.tree.map(split_time_major, batch), jax.tree.map(split_env_major, carry)


def minibatch_step(loss_fn: Callable, optimizer: optax.GradientTransformation, reduce: Collective, carry, mb):
    """One optimizer step on one minibatch: gradients (averaged over devices), then the update.
    `loss_fn(params, mb) -> (loss, metrics)`. Returns (OptCarry, metrics + grad_norm)."""
    grads, metrics = jax.grad(loss_fn, has_aux=True)(carry.params, mb)
    grads, metrics = reduce.mean((grads, metrics))
    updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return OptCarry(optax.apply_updates(carry.params, updates), opt_state), metrics


def _epoch(loss_fn, optimizer, reduce, split, batch, carry, key):
    return lax.scan(functools.partial(minibatch_step, loss_fn, optimizer, reduce), carry, split(key, batch))


def sgd_epochs(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    carry: OptCarry,
    batch: Any,
    key: jax.Array,
    num_epochs: int,
    split: Callable[[jax.Array, Any], Any],
    reduce: Collective = LOCAL,
) -> tuple[OptCarry, dict]:
    """`num_epochs` passes over `batch`, each split into minibatches by `split(key, batch)`
    (leaves [M, ...]) and scanned with `minibatch_step`. Returns (carry, metrics [E, M])."""
    epoch = functools.partial(_epoch, loss_fn, optimizer, reduce, split, batch)
    return lax.scan(epoch, carry, jax.random.split(key, num_epochs))
