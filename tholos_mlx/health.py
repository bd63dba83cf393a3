"""The client side of GET /health: what a server on 127.0.0.1 answers, for `models` and the services."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

from tholos_mlx.address import published_port
from tholos_mlx.home import KEY_FILE


def fetch(port: int, key: str, timeout: float = 1.0) -> dict[str, object] | None:
    """GET http://127.0.0.1:PORT/health with the key: its JSON object on a 200, else None.

    A 200 whose body is not a JSON object still means a server answered: it gives {}.
    """
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {key}"}
    )
    # No proxies: an http_proxy in the environment must not carry a loopback request away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                return None
            raw = response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return None  # refused, reset, timed out, 401 from another server: nobody we can ask
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def of_home(home: Path, port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """What the server of this home (its key, on this port) answers at /health; None if none."""
    try:
        key = (home / KEY_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return fetch(port, key, timeout) if key else None


def find(home: Path, port: int, timeout: float = 1.0) -> tuple[int, dict[str, object]] | None:
    """The running server of this home and its /health: at the port it published, else PORT."""
    published = published_port(home)
    for candidate in dict.fromkeys(p for p in (published, port) if p is not None):
        health = of_home(home, candidate, timeout)
        if health is not None:
            return candidate, health
    return None
