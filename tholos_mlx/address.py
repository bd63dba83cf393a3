"""THOLOS_HOME/server.json: where the running server listens, so the CLI finds it however it started."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tholos_mlx.home import write_atomic

ADDRESS_FILE = "server.json"


def publish(home: Path, port: int) -> None:
    """Say, atomically, that this process serves on 127.0.0.1:PORT (while it runs)."""
    body = {"url": f"http://127.0.0.1:{port}/v1", "port": port, "pid": os.getpid()}
    write_atomic(home / ADDRESS_FILE, json.dumps(body).encode() + b"\n", mode=0o600)


def withdraw(home: Path) -> None:
    """Remove the file if this process wrote it (another server of the home may have since)."""
    path = home / ADDRESS_FILE
    if _read(path).get("pid") == os.getpid():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def published_port(home: Path) -> int | None:
    """The port the file names, if any: a server that died without removing it may be gone."""
    port = _read(home / ADDRESS_FILE).get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return port
    return None


def _read(path: Path) -> dict[str, object]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
