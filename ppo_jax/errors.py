"""The exceptions ppo_jax raises for problems a user can fix; the commands turn each into one line
and an exit code (2 bad input, 1 files and checkpoints, 3 non-finite training, 130 stopped)."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value; `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupted, or does not fit the requested run."""


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the quantity, the update and the seed."""


class RunStopped(RuntimeError):
    """A run stopped at a checkpoint because SIGINT or SIGTERM asked it to; it can be resumed."""

    def __init__(self, out, update: int, num_updates: int, processes: int = 1, command: str = "ppo-jax train"):
        every = f" in each of the {processes} processes, with their distributed flags" if processes > 1 else ""
        super().__init__(f"stopped at update {update}/{num_updates}; resume with: {command} --resume {out}{every}")
        self.out, self.update, self.num_updates = out, update, num_updates


class RunFileError(RuntimeError):
    """A file a command reads (config, summary, checkpoint metadata, exported policy) is missing,
    empty, truncated, garbage or of another kind; `path` names it."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
