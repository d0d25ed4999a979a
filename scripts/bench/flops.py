"""FLOPs per environment step, counted by XLA's cost analysis of the policy family's own functions.

Nothing is assumed about the network: the forward pass is `ppo_jax.policies.unroll` of the
configured family (mlp, cnn, gru or a user's own) lowered on a batch of observations, the
backward pass is measured from `jax.grad` of a scalar of that forward pass, and the counts are
divided by the batch size. Counts are those of the un-optimised program (`Lowered.cost_analysis`):
the optimised one may hand products to library kernels whose FLOPs XLA does not count.
"""

from __future__ import annotations

from typing import Any


def cost_flops(fn, *args) -> float:
    """XLA's FLOP count of `jax.jit(fn)` lowered for `args` (arrays or `jax.ShapeDtypeStruct`s)."""
    import jax

    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, list | tuple):  # one entry per program in older JAX releases
        analysis = analysis[0]
    return float(analysis["flops"])


def policy_flops(config: Any, batch: int) -> dict[str, float]:
    """Per observation, on `batch` observations of one step: `forward` (dist and value), `value`
    (the critic alone, as GAE's bootstrap pass computes it) and `forward_backward` (the gradient
    with respect to the parameters of a scalar of the forward pass)."""
    import jax
    import jax.numpy as jnp

    from ppo_jax.engine.train import make_context
    from ppo_jax.policies import state_values, unroll

    ctx = make_context(config)
    policy = ctx.policy
    obs = jnp.zeros((1, batch, *ctx.rollout.spec.obs_shape), jnp.float32)  # [T = 1, N, ...]
    reset = jnp.zeros((1, batch), bool)
    carry = policy.initial_carry(batch)
    params = jax.eval_shape(policy.init, jax.random.key(0), obs[0])

    def forward(params):
        return unroll(policy, params, carry, obs, reset)

    def value(params):
        step_carry = jax.tree.map(lambda x: x[None], carry)  # the carry after each step: [T, N, ...]
        return state_values(policy, params, step_carry, obs, (1, batch))

    def scalar(params):
        return sum(jnp.sum(x) for x in jax.tree.leaves(forward(params)))

    return {
        "forward": cost_flops(forward, params) / batch,
        "value": cost_flops(value, params) / batch,
        "forward_backward": cost_flops(jax.grad(scalar), params) / batch,
    }


def flops_per_env_step(config: Any) -> dict[str, float]:
    """FLOPs that ppo_jax spends per environment step, by phase (a `PPOConfig`).

    rollout: the policy's forward pass (on `num_envs` observations); gae: the bootstrap value
    pass over the final observations; update: num_epochs × (forward + backward) per sample (on a
    minibatch). `backward` alone is recorded too (the measured gradient minus the forward pass).
    """
    acting = policy_flops(config, config.num_envs)
    learning = policy_flops(config, config.minibatch_size)
    out = {
        "rollout": acting["forward"],
        "gae": acting["value"],
        "update": config.num_epochs * learning["forward_backward"],
    }
    out["total"] = sum(out.values())
    out["backward"] = learning["forward_backward"] - learning["forward"]
    return out
