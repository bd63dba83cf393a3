"""Tests for tholos_mlx.health: the one client of GET /health, against a stand-in server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tholos_mlx import health

BODY = b'{"status": "ok", "model": "smollm2-135m", "queue": 0}'


@pytest.fixture
def health_server() -> Iterator[int]:
    """A stand-in /health on 127.0.0.1 that wants `Bearer right-key`; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's spelling)
            ok = self.path == "/health" and self.headers.get("Authorization") == "Bearer right-key"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(BODY if ok else b'{"error": {}}')

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep pytest's output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_gives_the_health_answer_to_the_right_key(
    health_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy in the environment must not swallow the loopback request.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9/")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    assert health.fetch(health_server, "right-key") == {
        "status": "ok",
        "model": "smollm2-135m",
        "queue": 0,
    }


def test_fetch_gives_none_for_a_401(health_server: int) -> None:
    assert health.fetch(health_server, "wrong-key") is None


def test_fetch_gives_none_when_nothing_listens() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert health.fetch(port, "right-key", timeout=2.0) is None


def test_of_home_asks_with_the_key_the_home_holds(health_server: int, tmp_path: Path) -> None:
    assert health.of_home(tmp_path, health_server) is None, "no key file: nobody to ask"
    (tmp_path / "api_key").write_text("right-key\n")
    assert health.of_home(tmp_path, health_server) == {
        "status": "ok",
        "model": "smollm2-135m",
        "queue": 0,
    }
    (tmp_path / "api_key").write_text("other-key\n")
    assert health.of_home(tmp_path, health_server) is None
