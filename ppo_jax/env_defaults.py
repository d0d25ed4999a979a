"""Shipped defaults per environment: the settings `default_config(env)` starts from.

Each entry cites the measurement or the published configuration that chose it (sweeps and
confirmation runs: docs/results/TUNING.md, docs/benchmarks/). Anything not listed uses the
`PPOConfig` field defaults. Plain dicts of field values: validation happens when
`config.default_config` builds the `PPOConfig`.
"""

from __future__ import annotations

from typing import Any

_CLASSIC = dict(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4, total_timesteps=500_000)
_CONTINUOUS = dict(
    num_envs=16,
    num_steps=128,
    num_epochs=10,
    num_minibatches=8,
    normalize_obs=True,
    normalize_reward=True,
    ent_coef=0.0,
)
# MinAtar: gymnax-blines' 64 envs x 128 steps, 4 epochs x 8 minibatches, 2 x 256 ReLU on the flattened
# grid, lr 5e-4 at 1e7 steps (agents/<game>/ppo.yaml). LeCun-normal kernels and Adam eps 1e-8 (Flax's and
# optax's defaults, as rejax and gymnax-blines initialise): on Breakout-MinAtar at 1e6 steps, 8 seeds, they
# raised the training return from 9.2 +- 3.1 (orthogonal, eps 1e-5) to 15.2 +- 6.4, with 5 of 8 seeds stuck
# at 7 before and 2 of 8 after (docs/benchmarks/ANALYSIS.md, "Returns"); confirmation in docs/results/.
_MINATAR = dict(
    num_envs=64,
    num_steps=128,
    num_epochs=4,
    num_minibatches=8,
    total_timesteps=10_000_000,
    hidden_sizes=(256, 256),
    activation="relu",
    lr=5e-4,
    kernel_init="lecun_normal",
    adam_eps=1e-8,
)

# Suite envs (`SUITE/NAME`), each from the suite's own published PPO configuration. Brax-style
# configs collect batch_size × num_minibatches × unroll_length samples per update from num_envs
# envs, so num_steps here = batch_size × num_minibatches × unroll_length / num_envs;
# num_updates_per_batch is num_epochs, discounting gamma, entropy_cost ent_coef. Brax's PPO
# (brax.training.agents.ppo.train defaults) clips the ratio at 0.3, neither clips the value loss
# nor the gradient norm (max_grad_norm 1e6 here), keeps the learning rate constant, uses Adam eps
# 1e-8 and swish networks (policy 4×32, value 5×256; one set of widths here, the value net's
# 256s). Their `reward_scaling` (a constant factor on rewards) has no field here.
_BRAX_PPO = dict(
    normalize_obs=True,
    total_timesteps=50_000_000,
    num_minibatches=32,
    lr=3e-4,
    clip_eps=0.3,
    gae_lambda=0.95,
    clip_value_loss=False,
    max_grad_norm=1e6,
    anneal_lr=False,
    adam_eps=1e-8,
    activation="silu",
    hidden_sizes=(256, 256, 256, 256),
)
# Brax's training notebook (google/brax, notebooks/training.ipynb: the `ppo.train` arguments per env).
_BRAX_NOTEBOOK = {
    # unroll_length=5, batch_size=2048, num_envs=4096, num_updates_per_batch=4, discounting=0.97, entropy 1e-2
    "brax/ant": dict(_BRAX_PPO, num_envs=4096, num_steps=80, num_epochs=4, gamma=0.97, ent_coef=1e-2),
    # unroll_length=20, batch_size=512, num_envs=2048, num_updates_per_batch=8, discounting=0.95, entropy 1e-3
    "brax/halfcheetah": dict(_BRAX_PPO, num_envs=2048, num_steps=160, num_epochs=8, gamma=0.95, ent_coef=1e-3),
    # unroll_length=10, batch_size=1024, num_envs=2048, num_updates_per_batch=8, discounting=0.97, entropy 1e-3
    "brax/humanoid": dict(_BRAX_PPO, num_envs=2048, num_steps=160, num_epochs=8, gamma=0.97, ent_coef=1e-3),
    # unroll_length=5, batch_size=1024, num_envs=2048, num_updates_per_batch=4, discounting=0.97, 2e6 steps
    "brax/inverted_pendulum": dict(
        _BRAX_PPO, total_timesteps=2_000_000, num_envs=2048, num_steps=80, num_epochs=4, gamma=0.97, ent_coef=1e-2
    ),
}
# MuJoCo Playground, mujoco_playground/config/dm_control_suite_params.py, brax_ppo_config:
# num_envs=2048, batch_size=1024, num_minibatches=32, unroll_length=30 (480 steps per env),
# num_updates_per_batch=16, discounting=0.995, learning_rate=1e-3, entropy_cost=1e-2, 6e7 steps.
_PLAYGROUND_DM_CONTROL = dict(
    _BRAX_PPO,
    total_timesteps=60_000_000,
    num_envs=2048,
    num_steps=480,
    num_epochs=16,
    gamma=0.995,
    lr=1e-3,
    ent_coef=1e-2,
)
# Craftax's PPO baseline (MichaelTMatthews/Craftax_Baselines, ppo.py argument defaults and its
# ActorCritic: 3 hidden layers of 512, tanh): 1024 envs × 64 steps, 4 epochs of 8 minibatches,
# lr 2e-4 annealed, γ 0.99, λ 0.8, clip 0.2, entropy 0.01, max grad norm 1.0, 1e9 steps.
_CRAFTAX_PPO = dict(
    num_envs=1024,
    num_steps=64,
    num_epochs=4,
    num_minibatches=8,
    total_timesteps=1_000_000_000,
    lr=2e-4,
    gamma=0.99,
    gae_lambda=0.8,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=1.0,
    activation="tanh",
    hidden_sizes=(512, 512, 512),
)
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    **_BRAX_NOTEBOOK,
    "playground/CartpoleBalance": dict(_PLAYGROUND_DM_CONTROL),
    "playground/CheetahRun": dict(_PLAYGROUND_DM_CONTROL),
    "playground/WalkerWalk": dict(_PLAYGROUND_DM_CONTROL),
    "craftax/Craftax-Classic-Symbolic-v1": dict(_CRAFTAX_PPO),
    "craftax/Craftax-Symbolic-v1": dict(_CRAFTAX_PPO),
    # Jumanji publishes no PPO (its A2C runs 9.6e7 steps). At 1e7 steps, six sweeps on seeds 0-3
    # (docs/results/sweep-records/jg-a.json, docs/results/TUNING.md): 64 envs x 64 steps; reward normalisation
    # (the rewards are the merged tiles' values, 4 to thousands: raw, lr 1e-3 reached a training IQM of 3591,
    # normalised 6149); then 2 x 128 ReLU and gamma 0.999: 7206 [6936, 7416].
    "jumanji/Game2048-v1": dict(
        num_envs=64,
        num_steps=64,
        normalize_reward=True,
        hidden_sizes=(128, 128),
        activation="relu",
        lr=1e-3,
        gamma=0.999,
        total_timesteps=10_000_000,
    ),
}

# Shipped defaults per environment; anything not listed uses the PPOConfig defaults.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    # gymnax-blines' 8 envs x 32 steps (agents/CartPole-v1/ppo.yaml) at its budget of 1.5e5 steps, lr from
    # `ppo-jax sweep --env CartPole-v1 --seeds 8 --num-envs 8 --num-steps 32 --total-timesteps 150000
    # --grid lr=2.5e-4,5e-4,1e-3,2e-3 --grid ent_coef=0,0.01`: lr 2e-3 gave training IQM 500.0 [500.0, 500.0],
    # AUC 434; the published lr 5e-4 gave 500.0 [460.5, 500.0], AUC 342 (docs/results/TUNING.md).
    "CartPole-v1": dict(_CLASSIC, num_envs=8, num_steps=32, lr=2e-3, total_timesteps=150_000),
    # gymnax-blines' 16 envs x 32 steps (agents/Acrobot-v1/ppo.yaml), lr from `ppo-jax sweep --env Acrobot-v1
    # --seeds 8 --num-envs 16 --num-steps 32 --total-timesteps 500000 --grid lr=2.5e-4,5e-4,1e-3,2e-3
    # --grid ent_coef=0,0.01` (lr 2e-3: training IQM -79.7 [-81.8, -77.9]; the old default, 4 x 128 at
    # lr 2.5e-4: -84.8 [-86.2, -83.2]), gae_lambda from `... --grid lr=2e-3,4e-3 --grid gae_lambda=0.9,0.95,0.98`
    # (0.9: -79.6 [-80.6, -79.0], AUC -85.4; 0.95: -79.9 [-186.1, -78.3], one seed stuck at -500) (TUNING.md).
    "Acrobot-v1": dict(_CLASSIC, num_envs=16, num_steps=32, lr=2e-3, gae_lambda=0.9),
    # Observation normalisation (the velocity is below 0.07 in magnitude) and gymnax-blines' 16 envs x 32 steps
    # at its budget of 2.5e5 steps (agents/MountainCar-v0/ppo.yaml, num_train_steps: 250000), 4 epochs x 4
    # minibatches, lr 3e-3, entropy 0.002: `ppo-jax sweep --env MountainCar-v0 --seeds 16 --num-envs 16
    # --num-steps 32 --normalize-obs --total-timesteps 250000 --grid gamma=0.99,0.995,0.999 --grid lr=3e-3,4.5e-3
    # --grid ent_coef=0.002` (docs/results/sweep-records/mc-j.json, seeds 0-15): lr 3e-3 training IQM -114.8
    # [-120.2, -113.4], mean -121.4, 2 of 16 seeds below -125; lr 4.5e-3 -114.5 [-128.1, -112.6], mean -126.0
    # (it led on seeds 0-7, mc-h, and gave eval IQM -138.8 on seeds 1000-1007); gamma 0.995/0.999 lose half
    # the seeds. 8 or 16 epochs per batch did no better (mc-f, mc-i, mc-k; docs/results/TUNING.md).
    "MountainCar-v0": dict(
        _CLASSIC, num_envs=16, num_steps=32, normalize_obs=True, lr=3e-3, ent_coef=0.002, total_timesteps=250_000
    ),
    # `ppo-jax sweep --env Pendulum-v1 --seeds 8 --grid lr=3e-4,1e-3,3e-3 --grid gamma=0.9,0.95,0.98`: lr 1e-3,
    # gamma 0.98 gave training IQM -152.5 [-163.2, -149.4], the old gamma 0.95 -156.9 [-168.8, -154.2];
    # `... --lr 1e-3 --grid gamma=0.98,0.99 --grid gae_lambda=0.9,0.95` kept 0.98 and 0.95; then
    # `ppo-jax sweep --env Pendulum-v1 --seeds 8 --grid init_log_std=0,-0.5,-1 --grid clip_eps=0.2,0.1`:
    # clip 0.1 -149.1 [-159.4, -146.3], clip 0.2 -152.5 [-163.2, -149.4]; on fresh seeds 1000-1007 the
    # eval IQM went from -160.1 to -152.0. ReLU instead of tanh (seeds 0-7, sweep-records/pe-j.json):
    # `... --activation relu --grid lr=2e-4,3e-4` and `... --grid lr=5e-4,1e-3,2e-3 --grid gamma=0.97,0.98`
    # gave training IQM -146.4 [-152.0, -143.6] at lr 3e-4 (tanh at lr 1e-3: -152.4 [-157.0, -148.7]); on
    # seeds 1000-1007 the eval IQM went from -152.0 to -148.1 [-153.6, -143.7] (TUNING.md).
    "Pendulum-v1": dict(_CONTINUOUS, total_timesteps=1_000_000, activation="relu", lr=3e-4, gamma=0.98, clip_eps=0.1),
    # Kept: `ppo-jax sweep --env MountainCarContinuous-v0 --seeds 8 --grid lr=3e-4,1e-3 --grid ent_coef=0,0.001`
    # gave training IQM 93.8 [93.8, 93.9] for lr 3e-4 (every seed reaches the goal); at lr 1e-3, 3 to 5 of
    # 8 seeds settle at 0 (never pushing) (TUNING.md).
    "MountainCarContinuous-v0": dict(_CONTINUOUS, total_timesteps=1_000_000, lr=3e-4, gamma=0.99),
    # The MinAtar default (above) serves SpaceInvaders as it is. Seaquest: `ppo-jax sweep --env E --seeds 8
    # --total-timesteps 2000000 --grid gamma=0.99,0.999 --grid ent_coef=0.01,0.001 --grid lr=2.5e-4,5e-4,1e-3`,
    # rank 1 by training IQM (docs/results/sweep-records/sq-a.json): gamma 0.999 6.7 [5.0, 9.3] against
    # 5.0 [4.2, 6.1] (the CIs of ranks 1-8 overlap); at 1e7 steps, eval IQM 19.1 [8.6, 35.6].
    # Asterix: Freeway's layout (64 envs x 16 steps, 4 minibatches, lr 2e-3) with GAE lambda 0.7 and 2 x 512
    # units. Seeds 0-1 at 2e6 steps (sweep-records as-2m-c to as-2m-k): lambda 0.95 / 0.8 / 0.7 gave 6.7 /
    # 10.9 / 16.0 at 2 x 256 units, 17.9 at 2 x 512. On seeds 1000-1007, eval IQM at 2e6 steps 16.0
    # [11.3, 20.0] (the previous setting, lr 1e-3 on the MinAtar default, trained to 4.7 on seeds 0-7), at
    # 1e7 steps 32.3 [19.0, 40.8] (previous setting 22.0 [20.7, 23.4]; gymnax-blines PPO 17.8 at lr 1e-3;
    # docs/results/TUNING.md, "MinAtar").
    "Asterix-MinAtar": dict(
        _MINATAR, num_steps=16, num_minibatches=4, lr=2e-3, gae_lambda=0.7, hidden_sizes=(512, 512)
    ),
    # Breakout: gymnax-blines' gamma 0.999 and constant lr. Seeds 0-7 at 2e6 steps on the CPU (sweep-records
    # br-a, br-b): annealed lr, gamma 0.99 18.1 [9.8, 32.3], gamma 0.999 15.4 [9.6, 23.5]; constant lr 5e-4,
    # gamma 0.999 21.6 [18.5, 24.8] with no seed stuck at 7. Then the constant lr (br-2m-d, seeds 0-7, 2e6
    # steps): 2e-3 23.9 [21.7, 32.1], 1e-3 23.3 [18.8, 32.0]. On seeds 1000-1007, eval IQM at 1e7 steps
    # 60.3 [44.1, 71.8] (lr 5e-4: 60.4 [34.0, 85.8]; gymnax-blines PPO 43.4), at 2e6 steps
    # 35.7 [24.4, 46.4] (lr 5e-4: 23.3 [16.7, 30.7]; docs/results/TUNING.md).
    "Breakout-MinAtar": dict(_MINATAR, gamma=0.999, anneal_lr=False, lr=2e-3),
    # Freeway: 4 times the updates (64 envs x 16 steps, 4 minibatches of 256) at lr 2e-3 and GAE lambda 0.8.
    # Seeds 0-1 at 2e6 steps (sweep-records fw-2m-a to fw-2m-r): the layout took the training return from
    # 32.7 to 56.0, then lambda 0.98 / 0.95 / 0.9 / 0.85 / 0.8 gave 52.7 / 56.0 / 58.0 / 60.1 / 60.6. On seeds
    # 1000-1007, eval IQM at 2e6 steps 59.4 [59.0, 59.7] (the MinAtar default: 32.7 [24.6, 40.4]), at 1e7
    # steps 63.4 [62.6, 64.4] (the MinAtar default: 62.3 [61.8, 62.7]; gymnax-blines PPO 58.8; docs/results/TUNING.md).
    "Freeway-MinAtar": dict(_MINATAR, num_steps=16, num_minibatches=4, lr=2e-3, gae_lambda=0.8),
    "Seaquest-MinAtar": dict(_MINATAR, gamma=0.999),
    "SpaceInvaders-MinAtar": dict(_MINATAR),
    # Recurrent benchmark envs (`network="gru"`; `--network mlp` keeps the other settings).
    # lr 3e-3: sweep StatelessCartPole-v1 gru lr in {3e-4, 1e-3, 3e-3} x 2 seeds x 300k steps at 4 envs x
    # 128 steps, 4 minibatches: final 125.7 / 500.0 / 500.0, AUC 61.4 / 311.6 / 376.8
    # (docs/benchmarks/recurrent_sweeps.md).
    "StatelessCartPole-v1": dict(_CLASSIC, network="gru", total_timesteps=1_000_000, lr=3e-3),
    # MemoryChain-bsuite (6-step episodes): 8 envs x 32 steps, 2 minibatches (chosen for a cheap update, not
    # swept); lr 1e-3: sweep MemoryChain-bsuite gru lr in {3e-4, 1e-3, 3e-3} x 2 seeds x 100k steps: final
    # 0.999 / 1.000 / 0.494 (3e-3: one seed at 0), AUC 0.945 / 0.978 / 0.512 (docs/benchmarks/recurrent_sweeps.md).
    "MemoryChain-bsuite": dict(
        _CLASSIC, network="gru", num_envs=8, num_steps=32, num_minibatches=2, total_timesteps=100_000, lr=1e-3
    ),
    **SUITE_DEFAULTS,
}
