"""JAX's persistent compilation cache for the commands: a program compiled once is loaded from
disk by the next process that compiles the same program (same config shapes, any traced values).

The cache lives in `$XDG_CACHE_HOME/ppo_jax` (default `~/.cache/ppo_jax`); `CacheCounter` reads
JAX's own events, so a run can say whether every one of its programs came from the cache: JAX
times each compile-or-load of a program as one backend-compile event and counts a load from the
cache as a hit, so compiles = events - hits. (A miss is only counted when a program is written to
the cache; a program JAX will not cache, e.g. one holding a host callback, compiles without one.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

HIT_EVENT = "/jax/compilation_cache/cache_hits"
MISS_EVENT = "/jax/compilation_cache/cache_misses"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # a compile, or a load from the cache
_counts = {HIT_EVENT: 0, MISS_EVENT: 0, COMPILE_EVENT: 0}
_threads: dict[int, dict[str, int]] = {}  # the counts of the threads in `compile_here`, by thread id
_listening = False


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/ppo_jax, or ~/.cache/ppo_jax."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ppo_jax"


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Turn the persistent cache on for every program (even quick ones) in `path` (default
    `cache_dir()`); returns the folder, or None when it cannot be created (nothing is cached then)."""
    import jax

    folder = Path(path) if path is not None else cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def _listen(event: str, *args, **kwargs) -> None:
    if event in _counts:  # JAX reports a compile or load in the thread that asked for it
        _counts[event] += 1
        mine = _threads.get(threading.get_ident())
        if mine is not None:
            mine[event] += 1


def _start_listening() -> None:
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_listener(_listen)
        jax.monitoring.register_event_duration_secs_listener(_listen)
        _listening = True


def counts() -> tuple[int, int]:
    """(hits, misses) of the persistent cache in this process so far."""
    _start_listening()
    return _counts[HIT_EVENT], _counts[MISS_EVENT]


def loads() -> tuple[int, int]:
    """(programs compiled or loaded, of them loaded from the persistent cache) in this process so far."""
    _start_listening()
    return _counts[COMPILE_EVENT], _counts[HIT_EVENT]


def compiled_since(before: tuple[int, int]) -> int:
    """Programs XLA compiled (did not load from the persistent cache) since `loads()` gave `before`."""
    requests, hits = (now - then for now, then in zip(loads(), before, strict=True))
    return requests - hits


def compile_here(lowered, options: dict | None = None):
    """(`lowered.compile(options)`, whether XLA compiled it rather than loading it from the
    persistent cache), told from this thread's events only: other threads may compile meanwhile."""
    _start_listening()
    mine = _threads[threading.get_ident()] = dict.fromkeys(_counts, 0)
    try:
        compiled = lowered.compile(compiler_options=options)
    finally:
        del _threads[threading.get_ident()]
    return compiled, mine[COMPILE_EVENT] > mine[HIT_EVENT]


def compile_afresh(lower, options: dict | None = None):
    """`lower().compile(options)` by XLA in this process, with the persistent cache off meanwhile
    (an executable JAX loads from its cache does not serialise whole; `eval_program.keep`)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    jax_cache.reset_cache()  # JAX decides once per process whether its cache is used
    try:
        return lower().compile(compiler_options=options)
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        jax_cache.reset_cache()


def current_dir() -> str | None:
    """The cache folder JAX uses now, or None when the cache is off."""
    import jax

    return jax.config.jax_compilation_cache_dir or None


class CompileCounter:
    """Counts backend-compile events (a compile, or a load from the cache) while active (a
    `jax.monitoring` listener): `with CompileCounter() as c: ...; c.count, c.names`."""

    def __init__(self):
        self.names: list[str] = []  # names of the compiled functions, in order

    @property
    def count(self) -> int:
        return len(self.names)

    def __call__(self, event: str, duration: float, *args, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.names.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self) -> CompileCounter:
        import jax

        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc) -> None:
        import jax

        jax.monitoring.unregister_event_duration_listener(self)
