"""Benchmark runner for Stable-Baselines3 PPO (PyTorch on the CPU). Runs in its own virtual environment.

Usage: python sb3_runner.py '<spec json>'. The spec carries the resolved ppo_jax config
(`config`), `seeds` and `eval_episodes`. Prints one line `BENCH_RESULT {json}`.

One process trains one seed after another (SB3 has no vectorisation over seeds). Environments
are Gymnasium's CartPole-v1 / Pendulum-v1 and MinAtar's Breakout with the settings of gymnax's
port (minimal action set, no sticky actions, 1000-step limit), in a `DummyVecEnv`.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from importlib import metadata

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}


def make_env_fn(name: str):
    """A Gymnasium constructor for the gymnax id `name`."""
    if name == "Breakout-MinAtar":
        from minatar.gym import BaseEnv

        def breakout():
            env = BaseEnv("breakout", use_minimal_action_set=True, sticky_action_prob=0.0)
            return gym.wrappers.TimeLimit(env, max_episode_steps=1000)

        return breakout
    return lambda: gym.make(name)


def make_venv(config: dict, num_envs: int, seed: int):
    venv = DummyVecEnv([make_env_fn(config["env"])] * num_envs)
    venv.seed(seed)
    venv = VecMonitor(venv)  # raw episode returns, before any normalisation
    if config["normalize_obs"] or config["normalize_reward"]:
        venv = VecNormalize(
            venv,
            norm_obs=config["normalize_obs"],
            norm_reward=config["normalize_reward"],
            clip_obs=10.0,
            clip_reward=10.0,
            gamma=config["gamma"],
            epsilon=1e-8,
        )
    return venv


class EpisodeLog(BaseCallback):
    """Records (timestep, return) of every episode that ends during training."""

    def __init__(self):
        super().__init__()
        self.episodes: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
        return True


def build(config: dict, seed: int) -> tuple[PPO, list[str]]:
    """An SB3 PPO configured like the ppo_jax config; returns it and the settings it cannot match."""
    lr = config["lr"]
    schedule = (lambda progress: lr * progress) if config["anneal_lr"] else lr
    hidden = list(config["hidden_sizes"])
    model = PPO(
        "MlpPolicy",
        make_venv(config, config["num_envs"], seed),
        learning_rate=schedule,
        n_steps=config["num_steps"],
        batch_size=config["num_envs"] * config["num_steps"] // config["num_minibatches"],
        n_epochs=config["num_epochs"],
        gamma=config["gamma"],
        gae_lambda=config["gae_lambda"],
        clip_range=config["clip_eps"],
        clip_range_vf=None,
        normalize_advantage=config["normalize_advantages"],
        ent_coef=config["ent_coef"],
        vf_coef=0.5 * config["vf_coef"],  # SB3's value loss is mean((V - R)^2), ppo_jax's ½·mean(...)
        max_grad_norm=config["max_grad_norm"],
        policy_kwargs={
            "net_arch": {"pi": hidden, "vf": hidden},
            "activation_fn": ACTIVATIONS[config["activation"]],
            "ortho_init": True,
            "log_std_init": config["init_log_std"],
        },
        device="cpu",
        seed=seed,
        verbose=0,
    )
    mismatches = [
        "learning rate annealed once per update (SB3 schedules per rollout), not per minibatch step",
        "environments are Gymnasium/MinAtar (NumPy) in a DummyVecEnv, not gymnax",
    ]
    if config["clip_value_loss"]:
        mismatches.append(
            "no value-loss clipping: SB3's clip_range_vf clips the prediction without the max(), a different loss"
        )
    if config["env"] == "Breakout-MinAtar":
        mismatches.append("MinAtar Breakout (NumPy original) stands in for gymnax's port")
    return model, mismatches


def update_returns(episodes: list[tuple[int, float]], steps_per_update: int, num_updates: int) -> list:
    """Mean return of the episodes that ended in each update (None where none ended)."""
    sums, counts = np.zeros(num_updates), np.zeros(num_updates)
    for t, r in episodes:
        u = min((t - 1) // steps_per_update, num_updates - 1)
        sums[u] += r
        counts[u] += 1
    return [round(float(s / c), 3) if c else None for s, c in zip(sums, counts, strict=True)]


def evaluate(model: PPO, config: dict, episodes: int, seed: int) -> float:
    """Mean return of `episodes` stochastic-policy episodes, normalisation statistics frozen."""
    venv = make_venv(config, min(episodes, 8), seed)
    if isinstance(venv, VecNormalize):
        venv.obs_rms = model.get_env().obs_rms
        venv.training, venv.norm_reward = False, False
    returns, _ = evaluate_policy(
        model, venv, n_eval_episodes=episodes, deterministic=False, return_episode_rewards=True
    )
    return float(np.mean(returns))


def main() -> None:
    spec = json.loads(sys.argv[1])
    config, seeds = spec["config"], int(spec["seeds"])
    if spec.get("torch_threads"):
        torch.set_num_threads(int(spec["torch_threads"]))
    steps_per_update = config["num_envs"] * config["num_steps"]
    num_updates = config["total_timesteps"] // steps_per_update
    setup_s = run_s = 0.0
    all_returns, eval_returns = [], []
    for i in range(seeds):
        t0 = time.perf_counter()
        model, mismatches = build(config, config["seed"] + i)
        log = EpisodeLog()
        t1 = time.perf_counter()
        model.learn(total_timesteps=num_updates * steps_per_update, callback=log)
        t2 = time.perf_counter()
        setup_s += t1 - t0
        run_s += t2 - t1
        all_returns.append(update_returns(log.episodes, steps_per_update, num_updates))
        if spec.get("eval_episodes"):
            eval_returns.append(evaluate(model, config, spec["eval_episodes"], 10_000 + config["seed"] + i))
    result = {
        "impl": "sb3",
        "seeds": seeds,
        "setup_s": setup_s,
        "compile_s": None,
        "run_s": run_s,
        "env_steps_per_seed": num_updates * steps_per_update,
        "steps_per_update": steps_per_update,
        "update_returns": all_returns,
        "eval_returns": eval_returns or None,
        "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {p: metadata.version(p) for p in ("stable_baselines3", "torch", "gymnasium", "MinAtar", "numpy")},
        "backend": f"torch cpu, {torch.get_num_threads()} threads",
        "mismatches": mismatches,
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
