"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (a scheduler preempting a job) ask a run to stop
at its next checkpoint boundary, where it saves; a second signal ends the process at once.

A running XLA program cannot be interrupted from Python, so the second signal restores the
default handler and re-raises itself rather than waiting for the program to return. Messages go
to a `notify(kind, message)` callable (the library never prints).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

Notify = Callable[[str, str], None]


def _silent(kind: str, message: str) -> None:
    return None


class StopRequest:
    """Context manager installing the handlers (main thread only; elsewhere it only records)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, has_boundary: bool = True, notify: Notify | None = None, install: bool = True):
        self.requested = False
        self.has_boundary = has_boundary
        self.notify = notify or _silent
        self.install = install and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if self.install:
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.notify("abort", "aborted without saving")
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.has_boundary:
            self.notify("stop", f"{what}: stopping at the next checkpoint boundary (again to abort without saving)")
        else:
            self.notify(
                "stop",
                f"{what}: this run has no checkpoint boundary before its end (start it with --checkpoint-every N "
                "to be able to stop early): it finishes and saves; again to abort without saving",
            )

    def __exit__(self, *exc) -> bool:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
