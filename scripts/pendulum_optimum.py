"""The best mean return any policy can reach on Pendulum-v1 (gymnax), by finite-horizon value iteration.

    python scripts/pendulum_optimum.py
    python scripts/pendulum_optimum.py --gamma 0.98   # the best policy for a discounted return
    python scripts/pendulum_optimum.py --policy RUN/policy-seed0.npz [...]   # where a policy loses

Dynamics and reward are gymnax's (dt 0.05, g 10, m = l = 1, torque clipped to ±2, speed to ±8,
reward −(θ² + 0.1 θ̇² + 0.001 u²) for 200 steps; starts θ ~ U[−π, π], θ̇ ~ U[−1, 1]). Value
iteration runs over a grid of (θ, θ̇) with bilinear interpolation and a grid of torques; the
greedy time-dependent policy is then played with the exact dynamics from random starts, which
gives a return that some policy reaches (a lower bound on the optimum, up to sampling error).
Also printed: the standard error of a mean over 100 and 164 episodes (one evaluation's noise).

With `--gamma`, value iteration maximises the discounted return Σ γᵗ rₜ (what PPO with that γ
optimises) and its greedy policy is played undiscounted: the best table return a learner of that
discount can reach.

With `--policy`, each exported policy (`policy-seed<N>.npz` of a run folder, deterministic actions)
is played with the same exact dynamics from the same starts as the greedy optimum, and its mean
return, its gap to the optimum per start, and that gap by the start's distance from upright are
printed: where the policy loses return.
"""

from __future__ import annotations

import argparse

import numpy as np

G, DT, MAX_SPEED, MAX_TORQUE, HORIZON = 10.0, 0.05, 8.0, 2.0, 200


def angle(x: np.ndarray) -> np.ndarray:
    return ((x + np.pi) % (2 * np.pi)) - np.pi


def step(theta: np.ndarray, speed: np.ndarray, torque: np.ndarray):
    """(reward, θ', θ̇') of gymnax's Pendulum-v1 with m = l = 1."""
    reward = -(angle(theta) ** 2 + 0.1 * speed**2 + 0.001 * torque**2)
    speed = np.clip(speed + (1.5 * G * np.sin(theta) + 3.0 * torque) * DT, -MAX_SPEED, MAX_SPEED)
    return reward, theta + speed * DT, speed


def interpolate(values: np.ndarray, theta: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of `values` [NT, NV] on the grid θ ∈ [−π, π], θ̇ ∈ [−8, 8]."""
    nt, nv = values.shape
    fi = (angle(theta) + np.pi) / (2 * np.pi) * (nt - 1)
    fj = (speed + MAX_SPEED) / (2 * MAX_SPEED) * (nv - 1)
    i, j = np.clip(np.floor(fi).astype(int), 0, nt - 2), np.clip(np.floor(fj).astype(int), 0, nv - 2)
    a, b = np.clip(fi - i, 0, 1), np.clip(fj - j, 0, 1)
    return (
        (1 - a) * (1 - b) * values[i, j]
        + a * (1 - b) * values[i + 1, j]
        + (1 - a) * b * values[i, j + 1]
        + a * b * values[i + 1, j + 1]
    )


def value_iteration(nt: int = 361, nv: int = 321, na: int = 41, gamma: float = 1.0):
    """Optimal values of Σ γᵗ rₜ at t = 0 [nt, nv] and the greedy torque per step [HORIZON][nt, nv]
    (one of `na` torques evenly spaced over [−2, 2])."""
    torques = np.linspace(-MAX_TORQUE, MAX_TORQUE, na)
    theta, speed, torque = np.meshgrid(
        np.linspace(-np.pi, np.pi, nt), np.linspace(-MAX_SPEED, MAX_SPEED, nv), torques, indexing="ij"
    )
    reward, next_theta, next_speed = step(theta, speed, torque)
    values, policy = np.zeros((nt, nv)), []
    for _ in range(HORIZON):
        q = reward + gamma * interpolate(values, next_theta, next_speed)
        policy.append(torques[q.argmax(-1)])
        values = q.max(-1)
    return values, policy[::-1]


def random_starts(starts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(θ, θ̇) [starts] drawn as gymnax resets: θ ~ U[−π, π], θ̇ ~ U[−1, 1]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-np.pi, np.pi, starts), rng.uniform(-1, 1, starts)


def greedy_controller(policy):
    """`controller(t, θ, θ̇)` of `value_iteration`'s greedy policy: the torque at the nearest grid point."""
    nt, nv = policy[0].shape

    def controller(t: int, theta: np.ndarray, speed: np.ndarray) -> np.ndarray:
        i = np.clip(np.round((angle(theta) + np.pi) / (2 * np.pi) * (nt - 1)).astype(int), 0, nt - 1)
        j = np.clip(np.round((speed + MAX_SPEED) / (2 * MAX_SPEED) * (nv - 1)).astype(int), 0, nv - 1)
        return policy[t][i, j]

    return controller


def returns_of(controller, theta: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """Returns [starts] of `controller(t, θ, θ̇) -> torque` played with the exact dynamics."""
    total = np.zeros(theta.shape)
    for t in range(HORIZON):
        reward, theta, speed = step(theta, speed, np.clip(controller(t, theta, speed), -MAX_TORQUE, MAX_TORQUE))
        total += reward
    return total


def exported_controller(path: str):
    """`controller(t, θ, θ̇)` of an exported ppo_jax policy: its deterministic action on gymnax's
    observation (cos θ, sin θ, θ̇)."""
    import jax

    import ppo_jax

    act = jax.jit(ppo_jax.load_policy(path).act)

    def controller(t, theta, speed):
        obs = np.stack([np.cos(theta), np.sin(theta), speed], -1).astype(np.float32)
        return np.asarray(act(obs), np.float64)[:, 0]

    return controller


def compare(policy, paths: list[str], starts: int = 4_000, seed: int = 2) -> None:
    """Print each exported policy's mean return and its gap to the greedy optimum from the same
    starts, overall and by |θ₀| (0 is upright, π hanging down)."""
    theta, speed = random_starts(starts, seed)
    best = returns_of(greedy_controller(policy), theta, speed)
    edges = np.array([0.0, 1.0, 2.0, 2.5, 3.0, np.pi + 1e-9])
    bins = np.digitize(np.abs(angle(theta)), edges[1:-1])
    print(f"greedy optimum from {starts} starts: mean {best.mean():.1f}")
    print("gap by |theta0| in " + ", ".join(f"[{a:.1f}, {b:.1f})" for a, b in zip(edges[:-1], edges[1:], strict=True)))
    for path in paths:
        returns = returns_of(exported_controller(path), theta, speed)
        gap = best - returns
        by_bin = ", ".join(f"{gap[bins == k].mean():.1f}" for k in range(len(edges) - 1))
        summary = f"mean {returns.mean():.1f}, gap {gap.mean():.1f} (median {np.median(gap):.1f})"
        print(f"{path}: {summary}; by |theta0|: {by_bin}")


def play(policy, starts: int = 20_000, seed: int = 0) -> np.ndarray:
    """Returns of the greedy policy (nearest grid point) under the exact dynamics [starts]."""
    return returns_of(greedy_controller(policy), *random_starts(starts, seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", nargs="*", default=[], help="exported policies to compare with the optimum")
    parser.add_argument("--gamma", type=float, default=1.0, help="discount of the return maximised (default 1)")
    args = parser.parse_args(argv)
    values, policy = value_iteration(gamma=args.gamma)
    if args.policy:
        compare(policy, args.policy)
        return
    if args.gamma == 1.0:
        starts = random_starts(20_000, seed=1)
        print(f"value iteration, mean optimal return over starts: {interpolate(values, *starts).mean():.1f}")
    else:
        print(f"value iteration of the return discounted by {args.gamma}; its greedy policy played undiscounted:")
    returns = play(policy)
    print(f"greedy policy played exactly: mean {returns.mean():.1f}, std {returns.std():.1f} per episode")
    for n in (100, 164):
        print(f"standard error of a {n}-episode mean: {returns.std() / np.sqrt(n):.1f}")


if __name__ == "__main__":
    main()
