"""One writer per output folder: a command holds an advisory lock on the folder it writes (a run,
a sweep, a comparison) from planning until its run ends, so a second command given the same
folder (with or without --overwrite or --resume) is refused before it deletes or compiles anything.

The lock is `flock` on the folder itself: no file is left behind, and the operating system drops
it when the holding process ends, however it ends (a crash leaves no stale lock). It is
re-entrant within a process (a counter per folder). Where `flock` is unavailable (no `fcntl`, or
a file system that refuses it) folders are not locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ppo_jax.errors import ConfigError
from ppo_jax.runtime import files

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

_held: dict[str, list[int]] = {}  # real path -> [file descriptor, hold count]


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def hold(folder: str | os.PathLike, flag: str = "out") -> Path:
    """Create `folder` if needed (checked writable) and lock it for this process; `ConfigError` naming `flag` when
    another process holds it. Each `hold` is matched by one `release`."""
    folder = files.prepare_dir(folder)  # OSError "not writable" naming it
    key = _key(folder)
    if key in _held:
        _held[key][1] += 1
        return folder
    if fcntl is None:
        return folder
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            flag,
            f"{folder} is being written by another process (a run, sweep or comparison still going, or one saving "
            f"its checkpoint as it stops); wait for it to end{', or choose another --out' if flag == 'out' else ''}",
        ) from None
    except OSError:  # a file system without flock: go on unlocked
        os.close(fd)
        return folder
    _held[key] = [fd, 1]
    return folder


def release(folder: str | os.PathLike | None) -> None:
    """Undo one `hold` of `folder` (the lock is dropped with the last one); a folder this process
    does not hold is ignored."""
    if folder is None:
        return
    key = _key(Path(folder))
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        os.close(entry[0])  # closing the descriptor drops the flock


def is_held(folder: str | os.PathLike) -> bool:
    """Whether this process holds `folder`."""
    return _key(Path(folder)) in _held


@contextlib.contextmanager
def holding(folder: str | os.PathLike, flag: str = "out", active: bool = True) -> Iterator[Path]:
    """`hold` `folder` (when `active`: the process that writes it) for work that goes on after the
    block (planning, then the run that releases it); released again if the block raises."""
    if not active:
        yield Path(folder)
        return
    held = hold(folder, flag)
    try:
        yield held
    except BaseException:
        release(folder)
        raise
