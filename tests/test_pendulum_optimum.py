"""scripts/pendulum_optimum.py, the Pendulum-v1 row's physical limit, against hand-derived returns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import pendulum_optimum as po  # noqa: E402


def test_hanging_still_without_torque_costs_pi_squared_every_step():
    # θ = π, θ̇ = 0 is the stable rest: with u = 0 it stays there (sin π ≈ 1e-16) and each of the
    # 200 steps costs θ² = π² (the angle is wrapped to −π).
    total = po.returns_of(lambda t, theta, speed: np.zeros_like(theta), np.array([np.pi]), np.array([0.0]))
    np.testing.assert_allclose(total, [-200 * np.pi**2], rtol=1e-9)


def test_torques_are_clipped_to_the_bound():
    # A controller asking for ±100 gets ±2: the same returns as one asking for ±2.
    theta, speed = np.array([0.5, -2.0]), np.array([0.3, -0.7])
    big = po.returns_of(lambda t, th, sp: np.where(th > 0, -100.0, 100.0), theta, speed)
    bound = po.returns_of(lambda t, th, sp: np.where(th > 0, -2.0, 2.0), theta, speed)
    np.testing.assert_array_equal(big, bound)


def test_value_iteration_values_upright_at_rest_at_zero_and_hanging_below_it():
    # Upright and still, u = 0 keeps the pendulum there at no cost, so the optimum there is 0;
    # everywhere else the return is negative. A coarse grid is enough to see both.
    values, policy = po.value_iteration(nt=37, nv=33, na=5)
    upright, still = 18, 16  # grid indices of θ = 0 and θ̇ = 0
    assert values[upright, still] == 0.0
    assert values.max() == 0.0 and values[0, still] < -100.0  # θ = −π: hanging down
    assert len(policy) == po.HORIZON and policy[0].shape == (37, 33)


def test_discounting_lowers_the_values_it_maximises():
    # Σ γᵗ rₜ with rₜ ≤ 0: a smaller γ gives values closer to 0 everywhere.
    full, _ = po.value_iteration(nt=19, nv=17, na=5)
    discounted, _ = po.value_iteration(nt=19, nv=17, na=5, gamma=0.9)
    assert np.all(discounted >= full - 1e-9) and discounted.min() > full.min()
