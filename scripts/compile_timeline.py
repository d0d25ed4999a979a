"""When each program of one `ppo-jax` command compiles, on which thread, and for how long.

    python scripts/compile_timeline.py [--min 0.1] -- rlhf --out /tmp/run

Runs `ppo-jax ARGS` in this process (the same `main`) with a listener on JAX's backend-compile
events (a compile, or a load from the persistent cache) and prints, when the command ends, one line
per event: start and end in seconds since this script started, duration, thread and the jitted
function's name; events shorter than `--min` seconds are counted but not listed. Use an empty
`XDG_CACHE_HOME` to see a first run.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

START = time.time()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--min", type=float, default=0.1, help="list only events at least this long (seconds)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the ppo-jax arguments")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    import jax.monitoring

    from ppo_jax.commands.main import main as cli

    events: list[tuple[float, float, str, str]] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event.endswith("backend_compile_duration"):
            end = time.time() - START
            events.append((end - duration, end, threading.current_thread().name, kwargs.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    imported = time.time() - START
    code = cli(command)
    print(f"imports done at {imported:.1f} s; command ended at {time.time() - START:.1f} s", file=sys.stderr)
    short = [e for e in events if e[1] - e[0] < args.min]
    for start, end, thread, name in sorted(e for e in events if e[1] - e[0] >= args.min):
        print(f"{start:7.1f} -> {end:7.1f}  {end - start:6.2f} s  {thread:<16} {name}", file=sys.stderr)
    print(f"{len(short)} shorter events, {sum(e[1] - e[0] for e in short):.2f} s together", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
