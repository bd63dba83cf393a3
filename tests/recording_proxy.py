"""A tiny HTTP proxy on 127.0.0.1 that keeps every request a client sends on to the server.

The agent CLIs' requests are read here, in the test, so the server never logs prompt text.
Answers are passed back whole (status, headers, body), streams included: a CLI reads a
buffered SSE body as it reads a live one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


@dataclass
class Seen:
    """One request as the client sent it, and the status the server gave."""

    method: str
    path: str
    body: Any
    status: int = 0


@dataclass
class Recorder:
    """The proxy's address and what went through it, oldest first."""

    base: str
    seen: list[Seen] = field(default_factory=list)

    def posts(self, path: str) -> list[Seen]:
        """The POSTs to `path` (query string aside)."""
        return [s for s in self.seen if s.method == "POST" and s.path.split("?")[0] == path]


@contextmanager
def recording(upstream: str, timeout: float = 600) -> Iterator[Recorder]:
    """A proxy to `upstream` (http://127.0.0.1:PORT) for the length of a with-block."""
    client = httpx.Client(base_url=upstream, timeout=timeout)
    lock = threading.Lock()
    recorder = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            seen = Seen(self.command, self.path, body)
            with lock:
                recorder.seen.append(seen)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            r = client.request(self.command, self.path, content=raw, headers=headers)
            seen.status = r.status_code
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in HOP | {"content-encoding"}:
                    self.send_header(k, v)
            self.send_header("content-length", str(len(r.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(r.content)

        do_GET = do_POST = do_HEAD = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the test reads `seen`, not a log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        client.close()
