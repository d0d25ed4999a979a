"""JAX's persistent compilation cache for the commands: a program compiled once is loaded from
disk by the next process that compiles the same program (same config shapes, any traced values).

The cache lives in `$XDG_CACHE_HOME/ppo_jax` (default `~/.cache/ppo_jax`); `CacheCounter` reads
JAX's own hit/miss events, so a run can say whether its programs came from the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

HIT_EVENT = "/jax/compilation_cache/cache_hits"
MISS_EVENT = "/jax/compilation_cache/cache_misses"
_counts = {HIT_EVENT: 0, MISS_EVENT: 0}
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


def _listen(event: str, **kwargs) -> None:
    if event in _counts:
        _counts[event] += 1


def counts() -> tuple[int, int]:
    """(hits, misses) of the persistent cache in this process so far."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_listener(_listen)
        _listening = True
    return _counts[HIT_EVENT], _counts[MISS_EVENT]


def current_dir() -> str | None:
    """The cache folder JAX uses now, or None when the cache is off."""
    import jax

    return jax.config.jax_compilation_cache_dir or None
