"""Benchmark runner for rejax PPO (pure JAX, gymnax 0.0.9). Runs in its own virtual environment.

Usage: python rejax_runner.py '<spec json>'. The spec carries the resolved ppo_jax config
(`config`), `seeds` and `eval_episodes`. Prints one line `BENCH_RESULT {json}`.

Timing: `jax.jit(train).lower(keys).compile()` is the compile time, one call of the compiled
program the run time, exactly as for ppo_jax. Training uses rejax's own `PPO.train_iteration`;
the loop around it records the mean return of the episodes that ended in each update (the same
metric as ppo_jax) instead of rejax's periodic evaluation, which would add its cost to the run.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from importlib import metadata

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from rejax import PPO
from rejax.evaluate import evaluate


@struct.dataclass
class StatsState:
    inner: object
    episode_return: jax.Array
    return_sum: jax.Array  # sum of returns of the episodes that ended so far
    count: jax.Array  # number of episodes that ended so far


class EpisodeStatsEnv:
    """A gymnax (0.0.9 API) env that counts finished episodes and their returns in its state."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        if name == "env":  # not set yet (copy.deepcopy builds the object without __init__)
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, key, params=None):
        obs, state = self.env.reset(key, params)
        zero = jnp.float32(0.0)
        return obs, StatsState(state, zero, zero, zero)

    def step(self, key, state, action, params=None):
        obs, inner, reward, done, info = self.env.step(key, state.inner, action, params)
        ret = state.episode_return + jnp.squeeze(reward)
        ended = jnp.asarray(done, jnp.float32)
        new = StatsState(
            inner,
            ret * (1.0 - ended),
            state.return_sum + ret * ended,
            state.count + ended,
        )
        return obs, new, reward, done, info


def build(config: dict, num_updates: int) -> tuple[PPO, list[str]]:
    """A rejax PPO configured like the ppo_jax config; returns it and the settings it cannot match."""
    env, env_params = gymnax.make(config["env"])
    steps_per_update = config["num_envs"] * config["num_steps"]
    lr = config["lr"]
    if config["anneal_lr"]:
        lr = optax.linear_schedule(lr, 0.0, num_updates * config["num_epochs"] * config["num_minibatches"])
    algo = PPO.create(
        env=EpisodeStatsEnv(env),
        env_params=env_params,
        total_timesteps=num_updates * steps_per_update,
        eval_freq=num_updates * steps_per_update,
        skip_initial_evaluation=True,
        num_envs=config["num_envs"],
        num_steps=config["num_steps"],
        num_epochs=config["num_epochs"],
        num_minibatches=config["num_minibatches"],
        learning_rate=lr,
        gamma=config["gamma"],
        gae_lambda=config["gae_lambda"],
        clip_eps=config["clip_eps"],
        ent_coef=config["ent_coef"],
        vf_coef=config["vf_coef"],
        max_grad_norm=config["max_grad_norm"],
        normalize_observations=config["normalize_obs"],
        normalize_rewards=config["normalize_reward"],
        reward_normalization_discount=config["gamma"],
        agent_kwargs={"activation": config["activation"], "hidden_layer_sizes": tuple(config["hidden_sizes"])},
    )
    mismatches = [
        "gradient clipping is element-wise (optax.clip), not by global norm",
        "gymnax 0.0.9 merges time-limit truncation into done: no bootstrap from V(final obs) at truncation",
        "actor and critic take separate optimizer steps (each clipped on its own)",
    ]
    if config.get("adam_eps", 1e-5) != 1e-8:
        mismatches.append(f"Adam eps 1e-8 (optax default), not {config.get('adam_eps', 1e-5):g}")
    if config.get("kernel_init", "orthogonal") != "lecun_normal":
        mismatches.append("default Flax init (LeCun normal weights), not orthogonal with gains sqrt2 / 0.01 / 1")
    if not config["clip_value_loss"]:
        mismatches.append("value loss is always clipped")
    if not config["normalize_advantages"]:
        mismatches.append("advantages are always normalised per minibatch")
    if config["normalize_obs"]:
        mismatches.append("observation normalisation without the ±10 clip; the first observation is not normalised")
    if config["normalize_reward"]:
        mismatches.append("reward scaling without the ±10 clip")
    if config["init_log_std"] != 0.0:
        mismatches.append("initial log-std fixed at 0")
    return algo, mismatches


def make_train(algo: PPO, num_updates: int):
    def iteration(ts, _):
        ts = algo.train_iteration(ts)
        env_state = ts.env_state
        ep_sum, ep_count = jnp.sum(env_state.return_sum), jnp.sum(env_state.count)
        zeros = jnp.zeros_like(env_state.count)
        ts = ts.replace(env_state=env_state.replace(return_sum=zeros, count=zeros))
        return ts, jnp.where(ep_count > 0, ep_sum / jnp.maximum(ep_count, 1.0), jnp.nan)

    def train(key):
        ts = algo.init_state(key)
        return jax.lax.scan(iteration, ts, None, length=num_updates)

    return train


def evaluate_seeds(algo: PPO, states, key, seeds: int, episodes: int) -> np.ndarray:
    """Mean return of `episodes` stochastic-policy episodes of each seed's final policy."""

    def one(ts, k):
        _, returns = evaluate(algo.make_act(ts), k, algo.env, algo.env_params, episodes)
        return jnp.mean(returns)

    return np.asarray(jax.jit(jax.vmap(one))(states, jax.random.split(key, seeds)))


def main() -> None:
    spec = json.loads(sys.argv[1])
    config, seeds = spec["config"], int(spec["seeds"])
    num_updates = config["total_timesteps"] // (config["num_envs"] * config["num_steps"])
    t0 = time.perf_counter()
    algo, mismatches = build(config, num_updates)
    train = make_train(algo, num_updates)
    keys = jax.random.split(jax.random.key(config["seed"]), seeds)
    if seeds == 1:  # one seed: the plain program, as a user would run it
        keys, fn = keys[0], jax.jit(train)
    else:
        fn = jax.jit(jax.vmap(train))
    t1 = time.perf_counter()
    compiled = fn.lower(keys).compile()
    t2 = time.perf_counter()
    states, returns = jax.block_until_ready(compiled(keys))
    t3 = time.perf_counter()
    if seeds == 1:
        states, returns = jax.tree.map(lambda x: x[None], (states, returns))
    eval_returns = None
    if spec.get("eval_episodes"):
        eval_returns = evaluate_seeds(
            algo, states, jax.random.key(10_000 + config["seed"]), seeds, spec["eval_episodes"]
        )
    returns = np.asarray(returns, np.float64)
    result = {
        "impl": "rejax",
        "seeds": seeds,
        "setup_s": t1 - t0,
        "compile_s": t2 - t1,
        "run_s": t3 - t2,
        "env_steps_per_seed": num_updates * config["num_envs"] * config["num_steps"],
        "steps_per_update": config["num_envs"] * config["num_steps"],
        "update_returns": [[None if np.isnan(x) else round(float(x), 3) for x in row] for row in returns],
        "eval_returns": None if eval_returns is None else [float(x) for x in eval_returns],
        "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {p: metadata.version(p) for p in ("rejax", "gymnax", "jax", "jaxlib", "flax", "optax", "distrax")},
        "backend": jax.default_backend(),
        "mismatches": mismatches,
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
