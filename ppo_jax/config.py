"""Configuration: static `PPOConfig`, traced `Hyperparams`, validation, and `default_config` (the
shipped per-env settings it reads are in `env_defaults`).

`PPOConfig` is one flat, frozen dataclass so that every field is a CLI flag and a keyword.
Each field is declared once (`ppo_jax.fields.declare`: default, one line of help, range or
choices, static or traced), and that declaration is its flag, its check in `validate` and, for
the scalar hyperparameters that `jax.vmap` may map over (traced), its leaf of `Hyperparams`.
Fields that set an array shape or a Python branch are static; changing them means compiling a
new program.

The parts a config names (`network`, `objective`, `env`: shipped names or references
`package.module:attribute`, `ppo_jax.plugins`) declare their own fields (`ppo_jax.fields.Field`,
e.g. the gru family's `rnn_size`, kl_penalty's `kl_coef`). Their values live in `part_fields`
and read like the built-in ones (`config.rnn_size`, `hparams.kl_coef`); `default_config`,
`replace` and `config_from_record` take them as keywords, and `to_dict` records them flat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ppo_jax import plugins
from ppo_jax.core.objectives import OBJECTIVES
from ppo_jax.env_defaults import ENV_DEFAULTS
from ppo_jax.errors import CheckpointError, ConfigError  # noqa: F401  (re-exported)
from ppo_jax.fields import Field, TracedValues, check_fields, declare, declared, fields_of
from ppo_jax.policies import FAMILIES
from ppo_jax.policies.init import KERNEL_INITS as _KERNEL_INITS
from ppo_jax.policies.layers import ACTIVATIONS as _ACTIVATION_FUNCTIONS

ACTIVATIONS = tuple(_ACTIVATION_FUNCTIONS)
NETWORKS = tuple(FAMILIES)
OBJECTIVE_NAMES = tuple(OBJECTIVES)
KERNEL_INITS = tuple(_KERNEL_INITS)
# Seeds are drawn into uint32 keys; runs use seed, seed + 1, ... below this bound (as sweeps do).
MAX_SEED = 2**31
POSITIVE = {"low": 0.0, "low_inclusive": False}  # (0, high]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything that defines a PPO run. Frozen; derived sizes are properties."""

    env: str = declare(
        "CartPole-v1",
        "gymnax id, SUITE/NAME (brax, playground, craftax, navix, xminigrid, jumanji), or package.module:attribute",
    )
    num_envs: int = declare(4, "parallel environments per seed", low=1)
    num_steps: int = declare(128, "rollout length per environment per update", low=1)
    num_epochs: int = declare(4, "passes over each rollout batch", low=1)
    num_minibatches: int = declare(4, "minibatches per epoch", low=1)
    total_timesteps: int = declare(500_000, "environment steps per seed", low=1)
    network: str = declare("mlp", f"policy family, one of {', '.join(NETWORKS)}, or package.module:attribute")
    hidden_sizes: tuple[int, ...] = declare(
        (64, 64), "hidden layer widths of actor and critic (gru: encoder, heads)", low=1
    )
    activation: str = declare("tanh", f"hidden activation, one of {', '.join(ACTIVATIONS)}", choices=ACTIVATIONS)
    kernel_init: str = declare(
        "orthogonal", f"weight initialisation, one of {', '.join(KERNEL_INITS)}", choices=KERNEL_INITS
    )
    fast_paths: bool = declare(True, "CPU fast paths (ppo_jax.fast_paths); off: the plain Flax/JAX calls they replace")
    anneal_lr: bool = declare(True, "decay the learning rate linearly to 0")
    clip_value_loss: bool = declare(True, "clip the value update to ±clip_eps around the old value")
    normalize_advantages: bool = declare(True, "normalise advantages per minibatch")
    normalize_obs: bool = declare(False, "running observation normalisation (clip ±10)")
    normalize_reward: bool = declare(False, "scale rewards by the running std of the return")
    objective: str = declare(
        "clip", f"policy objective, one of {', '.join(OBJECTIVE_NAMES)}, or package.module:attribute"
    )
    seed: int = declare(0, "random seed (seeds are seed, seed+1, ...)", low=0, high=MAX_SEED - 1)
    lr: float = declare(2.5e-4, "Adam learning rate (initial value when annealed)", traced=True, **POSITIVE)
    gamma: float = declare(0.99, "discount factor in [0, 1]", traced=True, low=0.0, high=1.0)
    gae_lambda: float = declare(0.95, "GAE lambda in [0, 1]", traced=True, low=0.0, high=1.0)
    clip_eps: float = declare(0.2, "PPO ratio clip range epsilon (> 0)", traced=True, **POSITIVE)
    ent_coef: float = declare(0.01, "entropy bonus coefficient (>= 0)", traced=True, low=0.0)
    vf_coef: float = declare(0.5, "value loss coefficient (>= 0)", traced=True, low=0.0)
    max_grad_norm: float = declare(0.5, "global gradient-norm clip (> 0)", traced=True, **POSITIVE)
    adam_eps: float = declare(
        1e-5, "Adam epsilon (> 0): 1e-5 as in Huang et al. 2022, optax's default is 1e-8", traced=True, **POSITIVE
    )
    init_log_std: float = declare(0.0, "initial log-std of the Gaussian policy (continuous)", traced=True)
    part_fields: tuple = dataclasses.field(
        default=(), metadata={"help": "the fields the parts declare, as (name, value) pairs", "traced": None}
    )

    def __post_init__(self):
        validate(self)

    def __getattr__(self, name: str) -> Any:
        """A field declared by one of the run's parts (`part_fields`)."""
        for key, value in self.__dict__.get("part_fields", ()):
            if key == name:
                return value
        raise AttributeError(f"{type(self).__name__} has no field {name!r} (not declared by its parts)")

    @property
    def batch_size(self) -> int:
        """Transitions per update: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates per seed: total_timesteps // batch_size (the remainder is not run)."""
        return self.total_timesteps // self.batch_size

    @property
    def env_steps(self) -> int:
        """Environment steps actually taken per seed."""
        return self.num_updates * self.batch_size

    def hyperparams(self) -> Hyperparams:
        """The traced fields as a `Hyperparams` pytree of float32 scalars (NumPy: building it runs
        no JAX computation; jit takes them as arguments)."""
        extra = {n: np.float32(v) for n, v in self.part_fields if part_declarations(self)[n].traced}
        return Hyperparams(**{n: np.float32(getattr(self, n)) for n in TRACED_FIELDS}, extra=extra)

    def replace(self, **changes: Any) -> PPOConfig:
        """A new, validated config with `changes` applied: built-in fields, or fields the new
        config's parts declare (values the old config set for fields still declared are kept)."""
        builtin = {k: v for k, v in changes.items() if k in FIELDS}
        parts = {k: v for k, v in changes.items() if k not in FIELDS}
        kept = {**dict(self.part_fields), **parts}
        probe = dataclasses.replace(self, **builtin, part_fields=()) if builtin else self
        declared_now = part_declarations(probe)
        kept = {k: v for k, v in kept.items() if k in declared_now or k in parts}
        return dataclasses.replace(self, **builtin, part_fields=tuple(kept.items()))

    def to_dict(self) -> dict[str, Any]:
        """Every field by name: the built-in ones, then those the parts declare."""
        return {**{name: getattr(self, name) for name in FIELDS}, **dict(self.part_fields)}


class Hyperparams(TracedValues):
    """Traced scalar hyperparameters: a pytree that `jax.vmap` can map over. Its leaves are the
    `PPOConfig` fields declared traced (`hparams.lr`, ...), then those the run's parts declare
    (`hparams.kl_coef`, ..., sorted by name; also in `extra`)."""

    def __init__(self, extra: dict | None = None, **values):
        super().__init__(**values, **dict(sorted((extra or {}).items())))

    @property
    def extra(self) -> dict:
        """The traced fields the parts declare."""
        return {n: v for n, v in self.as_dict().items() if n not in TRACED_RANGES}


# The built-in fields, each declared once in `PPOConfig` (`part_fields` holds the parts' own).
FIELDS: dict[str, Field] = fields_of(PPOConfig)
TRACED_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.traced)
STATIC_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if not f.traced)

# Allowed ranges of the traced fields, read off their declarations: (low, high, low_inclusive).
TRACED_RANGES: dict[str, tuple[float, float, bool]] = {
    n: (FIELDS[n].low, FIELDS[n].high, FIELDS[n].low_inclusive) for n in TRACED_FIELDS
}


def part_declarations(config: PPOConfig) -> dict[str, Field]:
    """{name: Field} the config's parts (family, objective, a referenced env) declare."""
    return declared(plugins.parts(config.network, config.objective, config.env))


def traced_fields(config: PPOConfig) -> tuple[str, ...]:
    """Every traced field of the run: the built-in ones, then those its parts declare."""
    return TRACED_FIELDS + tuple(n for n, f in part_declarations(config).items() if f.traced)


def traced_field(config: PPOConfig | None, name: str) -> Field:
    """The declaration of traced field `name`, built in or declared by `config`'s parts."""
    if name in TRACED_RANGES or config is None:
        return FIELDS[name]
    return part_declarations(config)[name]


def field_range(config: PPOConfig | None, name: str) -> tuple[float, float, bool]:
    """(low, high, low_inclusive) of a traced field, built-in or declared by `config`'s parts."""
    f = traced_field(config, name)
    return f.low, f.high, f.low_inclusive


def check_traced_value(name: str, value: float, config: PPOConfig | None = None) -> None:
    """Raise `ConfigError` if `value` is outside the allowed range of traced field `name` (which
    is capped at float32's largest finite magnitude; a part's field is looked up in `config`)."""
    traced_field(config, name).check(float(value))


def validate(config: PPOConfig) -> None:
    """Check every field against its declaration, the parts' fields against theirs, then the
    fields against each other; raise `ConfigError` naming the first bad one. Runs on construction."""
    check_fields(config, FIELDS)
    _check_part_fields(config)
    if plugins.resolve_objective(config.objective).on_policy and (config.num_epochs, config.num_minibatches) != (1, 1):
        raise ConfigError(
            "objective",
            f"{config.objective} takes one gradient step per rollout: set num_epochs=1 and num_minibatches=1 "
            f"(got {config.num_epochs} and {config.num_minibatches})",
        )
    if config.batch_size % config.num_minibatches:
        raise ConfigError(
            "num_minibatches",
            f"num_envs * num_steps = {config.batch_size} is not divisible by num_minibatches = "
            f"{config.num_minibatches}",
        )
    if config.total_timesteps < config.batch_size:
        raise ConfigError(
            "total_timesteps",
            f"must be at least one batch (num_envs * num_steps = {config.batch_size}), got {config.total_timesteps}",
        )


def _check_part_fields(config: PPOConfig) -> None:
    """Resolve the parts (`ConfigError` naming an unknown name or an unimportable reference),
    refuse values for fields no part declares, check the others and fill in the defaults."""
    decl = part_declarations(config)
    given = dict(config.part_fields)
    if len(given) != len(config.part_fields):
        raise ConfigError("part_fields", "a field is given twice")
    for name in given:
        if name not in decl:
            raise ConfigError(name, not_declared(config, name, decl))
    values = tuple((n, f.check(given.get(n, f.default))) for n, f in decl.items())
    object.__setattr__(config, "part_fields", values)


def not_declared(config: PPOConfig, name: str, decl: dict[str, Field]) -> str:
    """Why `name` is refused: which shipped part declares it, or that none does."""
    owners = [f"network {n}" for n, f in FAMILIES.items() if any(x.name == name for x in f.fields)]
    owners += [f"objective {n}" for n, o in OBJECTIVES.items() if any(x.name == name for x in o.fields)]
    parts = f"network {config.network}, objective {config.objective}"
    if owners:
        return f"a field of {' and '.join(owners)}, not of this run's parts ({parts})"
    own = f"; they declare {', '.join(decl)}" if decl else ""
    return f"unknown field (not built in, not declared by this run's parts: {parts}{own})"


def config_from_record(record: dict[str, Any]) -> PPOConfig:
    """A `PPOConfig` from `to_dict()` output read back from JSON (lists become tuples; keys that
    are no field, e.g. seeds, are left out unless a part declares them)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    builtin = {k: v for k, v in fields.items() if k in FIELDS}
    probe = PPOConfig(**builtin)
    decl = part_declarations(probe)
    parts = tuple((k, v) for k, v in fields.items() if k in decl)
    return dataclasses.replace(probe, part_fields=parts) if parts else probe


def resolve_seeds(config: PPOConfig, seeds: int | Sequence[int]) -> tuple[int, ...]:
    """An int n means seeds config.seed, ..., config.seed + n − 1; a sequence is taken as given."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("seeds", f"must be a positive integer, got {seeds}")
        seeds = range(config.seed, config.seed + int(seeds))
    out = tuple(seeds)
    if not out:
        raise ConfigError("seeds", "no seeds given")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < MAX_SEED:
            raise ConfigError("seeds", f"seeds must be integers in [0, 2^31), got {s!r}")
    if len(set(out)) != len(out):
        raise ConfigError("seeds", f"duplicate seeds {list(out)} would repeat identical runs")
    return tuple(int(s) for s in out)


def default_config(env: str = "CartPole-v1", **overrides: Any) -> PPOConfig:
    """The shipped config for `env` (tuned where listed in `ENV_DEFAULTS`) with `overrides`.

    An on-policy `objective` (reinforce, a2c) defaults to one epoch of one minibatch.
    """
    fields = {**ENV_DEFAULTS.get(env, {}), **overrides}
    objective = fields.get("objective", "clip")
    if isinstance(objective, str) and (objective in OBJECTIVES or plugins.is_reference(objective)):
        if plugins.resolve_objective(objective).on_policy:
            fields.update({k: overrides.get(k, 1) for k in ("num_epochs", "num_minibatches")})
    return PPOConfig().replace(env=env, **fields)
