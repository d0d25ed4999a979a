"""`run_rlhf(config) -> RLHFResult`: pretraining, the reward model (preference task), RL
fine-tuning and the before/after evaluation on held-out prompts, end to end.

Each phase is one jitted program; this module only sequences them, times them and collects the
numbers. It never prints: progress goes to the optional `callback(phase, step, metrics)`.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.config import ConfigError
from ppo_jax.core.token_losses import completion_mask
from ppo_jax.rlhf import ahead, hf_model, phase1_file
from ppo_jax.rlhf.config import FIELDS, RLHFConfig
from ppo_jax.rlhf.finetune import EvalStats, evaluate, full_params
from ppo_jax.rlhf.pretrain import Callback, PhaseResult, RewardModelResult, chunk_ahead, pretrain, train_reward_model
from ppo_jax.rlhf.rollout import Frozen, RLParams, Rollout, sequence_reward
from ppo_jax.rlhf.setup import RLSetup, make_setup
from ppo_jax.runtime import compile_cache, stats

if TYPE_CHECKING:  # the RL phase's checkpoints import the classic runtime (and gymnax): only when run
    from ppo_jax.rlhf.rl_run import RunOptions


class RLHFResult(NamedTuple):
    """Everything a run produced; `summary` and the histories are plain Python / NumPy."""

    config: RLHFConfig
    summary: dict[str, float]
    history: dict[str, np.ndarray]  # RL phase, [updates, seeds]
    pretrain_history: dict[str, np.ndarray]  # per step
    reward_model_history: dict[str, np.ndarray]  # per step (empty without a reward model)
    samples_before: list[dict[str, Any]]
    samples_after: list[dict[str, Any]]
    timings: dict[str, float]  # wall seconds per phase, compile included
    cpu_seconds: dict[str, float]  # process CPU seconds per phase (all threads)
    params: RLParams  # after RL (policy, and the critic for PPO), seed 0
    frozen: Frozen  # reference, reward model


class Keys(NamedTuple):
    """One key per use, all split from the config seed."""

    pretrain: jax.Array
    reward_model: jax.Array
    reward_stats: jax.Array
    eval_prompts: jax.Array
    eval_sample: jax.Array
    finetune: jax.Array


def split_keys(seed: int) -> Keys:
    return Keys(*jax.random.split(jax.random.key(seed), len(Keys._fields)))


def samples(config: RLHFConfig, rollout: Rollout) -> list[dict[str, Any]]:
    """The first `num_samples` generations of an evaluation, decoded, with their true reward."""
    task = make_setup(config).task
    return [
        {
            "prompt": task.decode(rollout.prompts[i]),
            "completion": task.decode(rollout.completions[i]),
            "true_reward": float(rollout.true_reward[i]),
        }
        for i in range(config.num_samples)
    ]


def _timed(timings: dict[str, float], cpu: dict[str, float], name: str, fn, *args, **kwargs):
    start, start_cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args, **kwargs))
    timings[name] = time.perf_counter() - start
    cpu[name] = time.process_time() - start_cpu
    return out


def _counted_since(counts: tuple[int, int]) -> tuple[int, int]:
    """(programs compiled or loaded, of them loaded from the persistent cache) since
    `compile_cache.loads()` gave `counts` (a program holding a host callback is never cached)."""
    now = compile_cache.loads()
    return now[0] - counts[0], now[1] - counts[1]


def _host(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


class Phase1(NamedTuple):
    """Everything RL starts from: the pretrained policy, the reward model and its statistics."""

    config: RLHFConfig  # the `pretraining_config()` it was made with
    pretrain: PhaseResult
    reward_model: RewardModelResult | None  # None for a task with a verifiable reward
    frozen: Frozen  # reference = pretrained policy, reward model, reward mean and std
    timings: dict[str, float]
    cpu_seconds: dict[str, float]
    cache_counts: tuple[int, int] = (0, 0)  # programs compiled or loaded while preparing, and cache loads


@functools.partial(jax.jit, static_argnames=("config",))
def reward_statistics(config: RLHFConfig, reference: Any, reward: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) of r_φ over `eval_prompts` completions of the reference policy (training prompts)."""
    setup = make_setup(config)
    key_prompt, key_sample = jax.random.split(key)
    task = setup.task
    prompts = task.prompts(key_prompt, config.eval_prompts)
    completions = setup.policy.sample_fn(reference, prompts, key_sample, task.completion_len, task.eos_id)
    frozen = Frozen(reference, reward, jnp.float32(0.0), jnp.float32(1.0))
    scores = sequence_reward(setup, frozen, prompts, completions, completion_mask(completions, task.eos_id))
    return jnp.mean(scores), jnp.std(scores) + 1e-6


def prepare(config: RLHFConfig, callback: Callback | None = None, chunk: Future | None = None) -> Phase1:
    """Phase 1 and the reward model. Depends only on `config.pretraining_config()`, so one result
    serves runs that differ only in RL settings (e.g. PPO and GRPO from the same pretrained model).
    `chunk`: the pretraining chunk's compile, when the caller started it (`pretrain.chunk_ahead`)."""
    config = config.pretraining_config()
    counts = compile_cache.loads()
    keys = split_keys(config.seed)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    pre = _timed(timings, cpu, "pretrain", pretrain, config, keys.pretrain, callback, chunk)
    rm, frozen = None, Frozen(pre.params, None, jnp.float32(0.0), jnp.float32(1.0))
    if make_setup(config).task.needs_reward_model:
        rm = _timed(timings, cpu, "reward_model", train_reward_model, config, pre.params, keys.reward_model, callback)
        mean, std = reward_statistics(config, pre.params, rm.params, keys.reward_stats)
        frozen = Frozen(pre.params, rm.params, mean, std)
    return Phase1(config, pre, rm, frozen, timings, cpu, _counted_since(counts))


def restore_or_prepare(
    config: RLHFConfig, callback: Callback | None, options: RunOptions | None, chunk: Future | None = None
) -> Phase1:
    """Phase 1 for a run: read back from `<out>/phase1.msgpack` when resuming a run that saved it,
    else prepared (and saved there when the run checkpoints, so that a resume need not redo it)."""
    folder = options.out if options is not None and options.checkpoint_every else None
    expected = config.pretraining_config().to_dict()
    if folder is not None and options.resume:
        start, start_cpu = time.perf_counter(), time.process_time()
        saved = phase1_file.load(folder, expected)
        if saved is not None:
            jax.block_until_ready(saved.frozen)
            timings = {"phase1_restore": time.perf_counter() - start}
            cpu = {"phase1_restore": time.process_time() - start_cpu}
            return Phase1(config.pretraining_config(), saved.pretrain, saved.reward_model, saved.frozen, timings, cpu)
    phase1 = prepare(config, callback, chunk)
    if folder is not None:
        saved = phase1_file.Saved(
            phase1.frozen, phase1.pretrain, phase1.reward_model, phase1.timings, phase1.cpu_seconds
        )
        phase1_file.save(folder, expected, saved)
    return phase1


def _check_phase1(config: RLHFConfig, phase1: Phase1) -> None:
    expected = config.pretraining_config()
    for name in FIELDS:
        if getattr(phase1.config, name) != getattr(expected, name):
            raise ConfigError(
                name, f"differs from the value phase1 was prepared with ({getattr(phase1.config, name)!r})"
            )


def initial_params(config: RLHFConfig, phase1: Phase1) -> RLParams:
    """RL starts from the pretrained policy (with LoRA: plus zero-effect adapters; the reference
    stays the base weights alone); PPO's critic is a copy of it (its scalar head starts at 0)."""
    policy = hf_model.initial_policy(config, phase1.frozen.reference, jax.random.key(config.seed))
    return RLParams(policy, policy if config.algorithm.critic else None)


def check_seeds(seeds: Any) -> None:
    """`seeds` must be a positive int; raises `ConfigError` naming it."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("seeds", f"must be a positive integer, got {seeds!r}")


def _seed_params(tree, index: int):
    return jax.tree.map(lambda x: x[index], tree)


def run_rlhf(
    config: RLHFConfig,
    callback: Callback | None = None,
    phase1: Phase1 | None = None,
    seeds: int = 1,
    options: RunOptions | None = None,
) -> RLHFResult:
    """Pretrain the policy, fit the reward model if the task needs one, fine-tune with
    `config.algo` for `seeds` RL seeds at once (`jax.vmap` over keys), and evaluate before and
    after on the same held-out prompts and sampling key.

    `phase1` (from `prepare`) skips pretraining and the reward model; its settings must match.
    Without it, a checkpointed run saves phase 1 in its folder and a resumed one reads it back.
    Histories are [updates, seeds]; the summary holds means over seeds, each seed's value and,
    for several seeds, a 95 % bootstrap interval of the mean; `params` are seed 0's.
    `options` (`rl_run.RunOptions`): RL-phase checkpoints, resume and the stop request.
    """
    check_seeds(seeds)
    from ppo_jax.rlhf import rl_programs
    from ppo_jax.rlhf.rl_run import run_rl_phase

    keys, hp = split_keys(config.seed), config.rl_hyperparams()
    chunk = _pretrain_ahead(config, keys.pretrain, options) if phase1 is None else None
    # Evaluation reads only phase-1 settings: compile it for those, shared by all RL settings.
    eval_setup = make_setup(phase1.config if phase1 is not None else config.pretraining_config())
    prompts = held_out_prompts(eval_setup, keys.eval_prompts, config.eval_prompts)
    setup = make_setup(config.static_rl_config())
    rl_keys = jax.random.split(keys.finetune, seeds)
    programs = rl_programs.start_rl_programs(
        config, eval_setup, setup, prompts, keys.eval_sample, rl_keys, hp, callback, options, after=chunk
    )  # compiling while phase 1 runs, once the pretraining chunk has compiled
    if phase1 is None:
        phase1 = restore_or_prepare(config, callback, options, chunk)
    _check_phase1(config, phase1)
    counts = compile_cache.loads()
    timings, cpu = dict(phase1.timings), dict(phase1.cpu_seconds)
    frozen = phase1.frozen

    def evaluation(policy):
        jitted = functools.partial(evaluate, eval_setup, policy, frozen, prompts, keys.eval_sample)
        return ahead.call(programs.evaluate, jitted, policy, frozen, prompts, keys.eval_sample)

    before, rollout_before = evaluation(frozen.reference)
    args = (setup, initial_params(config, phase1), frozen, rl_keys, hp, callback, options, programs.chunks)
    state, history = _timed(timings, cpu, "rl", run_rl_phase, *args)
    after = [evaluation(_seed_params(state.params.policy, s)) for s in range(seeds)]
    timings["total"] = sum(timings.values())
    cpu["total"] = sum(cpu.values())
    summary = summarize(config, before, [s for s, _ in after], phase1.reward_model) | _cache_summary(phase1, counts)
    return _result(config, phase1, summary, history, (rollout_before, after[0][1]), state, timings, cpu)


def _result(
    config: RLHFConfig, phase1: Phase1, summary: dict, history: dict, rollouts: tuple, state, timings: dict, cpu: dict
) -> RLHFResult:
    """Assemble the run's result: RL histories turned to [updates, seeds], phase-1 histories on
    the host, samples of the held-out rollouts before and after (seed 0), seed 0's full params."""
    frozen = phase1.frozen
    return RLHFResult(
        config=config,
        summary=summary,
        history={k: np.asarray(v).T for k, v in history.items()},
        pretrain_history=_host(phase1.pretrain.history),
        reward_model_history={} if phase1.reward_model is None else _host(phase1.reward_model.history),
        samples_before=samples(config, rollouts[0]),
        samples_after=samples(config, rollouts[1]),
        timings=timings,
        cpu_seconds=cpu,
        params=full_params(_seed_params(state.params, 0), frozen.reference),  # LoRA: base filled in
        frozen=frozen,
    )


def _pretrain_ahead(config: RLHFConfig, key: jax.Array, options: RunOptions | None) -> Future | None:
    """The pretraining chunk's compile, started before anything else of the run (the programs after
    phase 1 wait for it): for a model built from its config, unless the run resumes (its phase 1
    may be read back)."""
    if hf_model.is_checkpoint(config) or (options is not None and options.resume):
        return None
    return chunk_ahead(config.pretraining_config(), key)


@functools.partial(jax.jit, static_argnames=("setup", "num"))
def held_out_prompts(setup: RLSetup, key: jax.Array, num: int) -> jax.Array:
    """`num` held-out prompts [num, P] of the setup's task, as one program (run eagerly, each of
    its operations would compile on its own: about 2.5 s on a first run)."""
    return setup.task.prompts(key, num, held_out=True)


def _cache_summary(phase1: Phase1, counts: tuple[int, int]) -> dict[str, Any]:
    """The persistent cache's part of the summary: its folder, whether no program of the run
    compiled, and how many did (phase 1's programs and those since `counts`)."""
    requests, hits = (a + b for a, b in zip(phase1.cache_counts, _counted_since(counts), strict=True))
    return {
        "compile_cache_dir": compile_cache.current_dir(),
        "compile_cache_hit": requests > 0 and hits == requests,
        "programs_compiled": requests - hits,
    }


def _over_seeds(summary: dict[str, Any], name: str, values: list[float]) -> None:
    """summary[name] = mean over seeds, summary[name_per_seed], and a bootstrap CI for several."""
    summary[name] = float(np.mean(values))
    summary[f"{name}_per_seed"] = [float(v) for v in values]
    if len(values) > 1:
        ci = stats.bootstrap_ci(np.asarray(values), statistic=np.mean)
        summary[f"{name}_ci95"] = [ci.low, ci.high]


def summarize(config: RLHFConfig, before: EvalStats, after: list[EvalStats], rm: RewardModelResult | None):
    """The headline numbers as Python floats: accuracy (arithmetic) or true and learned reward
    (preference) before and after RL (means over seeds), the KL to the reference and lengths."""
    metric = "true_reward" if rm is not None else "accuracy"
    summary: dict[str, Any] = {f"{metric}_before": float(before.true_reward)}
    _over_seeds(summary, f"{metric}_after", [float(a.true_reward) for a in after])
    if rm is not None:
        summary["learned_reward_before"] = float(before.reward)
        _over_seeds(summary, "learned_reward_after", [float(a.reward) for a in after])
        summary["reward_model_accuracy"] = float(rm.eval_accuracy)
    _over_seeds(summary, "kl_to_reference", [float(a.kl) for a in after])
    summary["length_before"] = float(before.length)
    summary["length_after"] = float(np.mean([float(a.length) for a in after]))
    return summary
