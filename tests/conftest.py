"""Shared test configuration: strict rank promotion, a compile counter and tiny custom environments."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import tempfile

if "PYTEST_XDIST_WORKER" in os.environ:  # several worker processes share one accelerator
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp
import pytest
from flax import struct
from gymnax.environments import environment, spaces

# Implicit rank promotion ([N, 1] op [N] -> [N, N]) is a classic silent bug in RL code: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Commands keep compiled programs in $XDG_CACHE_HOME/ppo_jax: the tests use a folder of their own.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ppo_jax-test-cache-")

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# A test that hangs (a deadlock inside XLA holds no Python frame a timer could interrupt) ends the
# run after this many seconds with every thread's stack on stderr, instead of running into CI's limit.
HANG_SECONDS = 600


@pytest.fixture(autouse=True)
def fail_on_hang():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def count_compiles():
    """Count XLA backend compilations inside the block: `with count_compiles() as n: ...; n[0]`."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def assert_no_compiles():
    """Fail if XLA compiles anything inside the block. In-memory caches are cleared first so that
    the result does not depend on what earlier tests compiled."""
    jax.clear_caches()
    with count_compiles() as count:
        yield
    assert count[0] == 0, f"{count[0]} XLA compilation(s) happened; errors must be raised before any compile"


@pytest.fixture
def no_compiles():
    """`with no_compiles(): ...` fails the test if anything is compiled inside the block."""
    return assert_no_compiles


# --- a gymnax-style environment that never terminates ---------------------------------------


@struct.dataclass
class CounterState:
    time: jax.Array


@struct.dataclass
class CounterParams:
    max_steps_in_episode: int = 20


class AlwaysOneEnv(environment.Environment):
    """Reward 1 every step, never terminates, constant observation; gymnax truncates it at
    `max_steps_in_episode`. The true value of every state is 1 / (1 − γ)."""

    @property
    def default_params(self) -> CounterParams:
        return CounterParams()

    def step_env(self, key, state, action, params):
        state = CounterState(time=state.time + 1)
        return self.get_obs(state), state, jnp.float32(1.0), jnp.bool_(False), {}

    def reset_env(self, key, params):
        state = CounterState(time=jnp.int32(0))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.ones((1,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (1,), jnp.float32)


class DictActionEnv(AlwaysOneEnv):
    """Same dynamics, but a Dict action space, which PPO here does not support."""

    def action_space(self, params=None):
        return spaces.Dict({"move": spaces.Discrete(2), "speed": spaces.Discrete(3)})


class MatrixActionEnv(AlwaysOneEnv):
    """Same dynamics, but a 2-D Box action space (only 0-/1-D Box spaces are supported)."""

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2, 2), jnp.float32)


class KeyInStateEnv(environment.Environment):
    """A bandit whose reward noise comes from a typed PRNG key the env keeps in its state, as
    navix does: sweeps (between chunks) and checkpoints must carry that key intact."""

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=8)

    def reset_env(self, key, params):
        state = KeyState(time=0, noise=jax.random.key(jax.random.randint(key, (), 0, 2**30)))
        return jnp.zeros(1), state

    def step_env(self, key, state, action, params):
        draw, noise = jax.random.split(state.noise)
        reward = jax.random.uniform(draw) + action.astype(jnp.float32)
        return reward[None], KeyState(time=state.time + 1, noise=noise), reward, jnp.bool_(False), {}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (1,), jnp.float32)


@struct.dataclass
class KeyState(environment.EnvState):
    noise: jax.Array


@pytest.fixture
def always_one_env() -> AlwaysOneEnv:
    return AlwaysOneEnv()


@pytest.fixture
def dict_action_env() -> DictActionEnv:
    return DictActionEnv()


@pytest.fixture
def matrix_action_env() -> MatrixActionEnv:
    return MatrixActionEnv()


@pytest.fixture
def key_in_state_env() -> KeyInStateEnv:
    return KeyInStateEnv()
