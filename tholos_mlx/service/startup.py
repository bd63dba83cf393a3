"""After install: wait for the server's /health as long as it makes progress, not a fixed time.

A cold 40 GB model can take minutes to load before /health answers, so a fixed timeout is
either too short for it or far too long for a server that already died of a bad flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

START_GRACE_S = 10.0  # how long a service manager may take to show the process it spawned
STALL_S = 120.0  # the server logs "still loading" every LOADING_BEAT_S; this much silence: stuck
POLL_S = 0.5
LIMIT_S = 3600.0  # a backstop only: even a slow disk loads the biggest model sooner
LOADING_BEAT_S = 15.0  # cli.py's heartbeat while --model loads, which counts as progress here

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Watch:
    """What the wait can observe of the installed server; tests pass fakes on a fake clock."""

    healthy: Callable[[], bool]  # GET /health answers 200 to our key now
    pid: Callable[[], int | None]  # the process the service manager runs now, if any
    log: Path  # the server's stderr log, which grows while it starts and loads
    clock: Callable[[], float]
    sleep: Callable[[float], None]


def wait_until_serving(watch: Watch) -> str | None:
    """None once /health answers; else why waiting stopped (the process died, or stalled)."""
    start = watch.clock()
    first_pid: int | None = None
    size, changed = _size(watch.log), start
    while True:
        if watch.healthy():
            return None
        now = watch.clock()
        pid = watch.pid()
        if pid is None:
            if first_pid is not None:
                return "the server exited"
            if now - start >= START_GRACE_S:
                return f"the server was not running {START_GRACE_S:.0f} s after the start"
        elif first_pid is None:
            first_pid = pid
        elif pid != first_pid:
            return "the server exited and was started again"
        grown = _size(watch.log)
        if grown != size:
            size, changed = grown, now
        elif now - changed >= STALL_S:
            return f"the server wrote nothing to its log for {STALL_S:.0f} s"
        if now - start >= LIMIT_S:
            return f"the server was still not serving after {LIMIT_S:.0f} s"
        watch.sleep(POLL_S)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def last_line(path: Path, limit: int = 300) -> str:
    """The log's last non-empty line (printable, at most `limit` characters), or ""."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return _CONTROL.sub("?", lines[-1])[:limit] if lines else ""
