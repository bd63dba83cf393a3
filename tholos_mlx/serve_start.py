"""Starting `serve`: a port checked before minutes of loading, SIGTERM honoured while --model
loads, and a log line every few seconds while it does (a service install waits on the log)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from tholos_mlx.errors import UsageError


class Terminated(Exception):
    """SIGTERM arrived before the server was up: stop cleanly, exit 0."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While --model loads (minutes for a large one), SIGTERM stops the start instead of killing it."""

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    # A rank's stop is SIGINT (launch.run), ignored from birth: rank 0 takes it up here.
    interrupt = signal.signal(signal.SIGINT, on_term) if "MLX_RANK" in os.environ else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupt is not None:
            signal.signal(signal.SIGINT, interrupt)


def check_port(port: int) -> None:
    """Refuse a port another program holds, before minutes of model loading."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def heartbeat(what: str, every: float) -> Iterator[None]:
    """Log "still WHAT (N s)" every `every` seconds until the block ends.

    A service install waits on the server's log growing while /health is silent
    (service/startup.py), and a big model loads for minutes without a word otherwise.
    """
    log = logging.getLogger("tholos.serve")
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            log.info("still %s (%.0f s)", what, time.monotonic() - started)

    thread = threading.Thread(target=beat, name="tholos-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
