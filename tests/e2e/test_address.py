"""End to end: the running server says where it listens in THOLOS_HOME, so the CLI finds it on any port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import server as srv
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def _published(home: Path, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:  # written once Sanic listens, a moment around the first /health
        try:
            return dict(json.loads((home / "server.json").read_text()))
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_running_server_publishes_its_address_and_removes_it_when_it_stops(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = srv.start(home)  # a random port that no config.toml names
    try:
        published = _published(home)
        assert published["port"] == server.port and published["pid"] == server.proc.pid
        assert published["url"] == server.v1
        out = run_cli("cache", "clear", "--home", home)
        assert out.returncode == 0, out.stderr
        assert f"the server on port {server.port} still holds" in out.stdout
    finally:
        assert srv.stop(server) == 0
    assert not (home / "server.json").exists()
    assert "note:" not in run_cli("cache", "clear", "--home", home).stdout
