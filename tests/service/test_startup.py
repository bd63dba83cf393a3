"""Tests for service/startup.py: waiting on the installed server's progress, on a fake clock."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from tests.service.fakes import FakeClock
from tholos_mlx.cli import heartbeat
from tholos_mlx.service import startup
from tholos_mlx.service.startup import LOADING_BEAT_S, STALL_S, START_GRACE_S, Watch


class Server:
    """The server as the wait sees it: a pid (None: not running), its log, and /health."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.pid: int | None = 100
        self.healthy = False
        self.clock = FakeClock()

    def watch(self) -> Watch:
        return Watch(
            healthy=lambda: self.healthy,
            pid=lambda: self.pid,
            log=self.log,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def say(self, line: str) -> None:
        with self.log.open("a") as f:
            f.write(line + "\n")


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path / "serve.err.log")


def test_a_server_that_answers_at_once_needs_no_wait(server: Server) -> None:
    server.healthy = True
    assert startup.wait_until_serving(server.watch()) is None
    assert server.clock.now == 0


def test_a_server_whose_log_stays_silent_is_given_up_after_the_stall_window(
    server: Server,
) -> None:
    server.say("INFO tholos.serve: loading big from /models/big")
    why = startup.wait_until_serving(server.watch())
    assert why is not None and "wrote nothing" in why
    assert STALL_S <= server.clock.now < STALL_S + 1


def test_a_heartbeat_in_the_log_keeps_the_wait_going_past_the_stall_window(
    server: Server,
) -> None:
    def beat(now: float) -> None:
        if now % LOADING_BEAT_S == 0:
            server.say(f"INFO tholos.serve: still loading big ({now:.0f} s)")
        server.healthy = now >= 3 * STALL_S

    server.clock.on_sleep = beat
    assert startup.wait_until_serving(server.watch()) is None
    assert server.clock.now == 3 * STALL_S


def test_a_server_that_never_shows_a_process_is_given_up_after_the_grace(
    server: Server,
) -> None:
    server.pid = None
    why = startup.wait_until_serving(server.watch())
    assert why is not None and "not running" in why
    assert START_GRACE_S <= server.clock.now < START_GRACE_S + 1


def test_a_server_restarted_by_its_manager_is_reported_as_such(server: Server) -> None:
    def crash(now: float) -> None:
        if now == 5:
            server.pid = 101

    server.clock.on_sleep = crash
    why = startup.wait_until_serving(server.watch())
    assert why is not None and "started again" in why
    assert server.clock.now == 5


def test_the_last_log_line_is_printable_and_short(server: Server) -> None:
    assert startup.last_line(server.log) == ""
    server.say("first")
    server.say("tholos-mlx: error: \x1b[31mred\x1b[0m " + "x" * 400)
    server.say("")
    last = startup.last_line(server.log)
    assert last.startswith("tholos-mlx: error: ?[31mred?[0m x") and len(last) == 300


def test_the_stall_window_outlasts_several_loading_heartbeats() -> None:
    assert STALL_S >= 4 * LOADING_BEAT_S


def test_heartbeat_logs_until_its_block_ends(caplog: pytest.LogCaptureFixture) -> None:
    beats = threading.Semaphore(0)

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            beats.release()

    log = logging.getLogger("tholos.serve")
    counter = Counter()
    log.addHandler(counter)
    try:
        with caplog.at_level(logging.INFO, logger="tholos.serve"):
            with heartbeat("loading tiny", 0.01):
                assert beats.acquire(timeout=30) and beats.acquire(timeout=30), "two beats"
            said = [r.getMessage() for r in caplog.records]
            assert said[0].startswith("still loading tiny (") and len(said) >= 2
        assert "tholos-heartbeat" not in [t.name for t in threading.enumerate()], "it stopped"
    finally:
        log.removeHandler(counter)
