"""Tests for tholos_mlx.health: the one client of GET /health, against a stand-in server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.health_stub import health_stub
from tholos_mlx import health

BODY = b'{"status": "ok", "model": "smollm2-135m", "queue": 0}'


@pytest.fixture
def health_server() -> Iterator[int]:
    """A stand-in /health on 127.0.0.1 that wants `Bearer right-key`; yields its port."""
    with health_stub("right-key", BODY) as port:
        yield port


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
