"""Start the real `tholos-mlx serve` as a subprocess for end-to-end tests, and stop it for sure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: its address, key, process and log file."""

    home: Path
    port: int
    key: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        """The root URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        """The OpenAI base URL."""
        return f"{self.base}/v1"

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header every request needs."""
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, timeout: float = 300.0) -> httpx.Client:
        """An httpx client with the key set; the timeout only bounds a hang (a shared CPU is slow)."""
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=timeout)

    def log_text(self) -> str:
        """What the server has written to stderr so far."""
        return self.log.read_text(errors="replace")

    def chat(self, messages: list[dict[str, str]], **fields: object) -> httpx.Response:
        """POST /v1/chat/completions (greedy unless told otherwise)."""
        body = {"messages": messages, "temperature": 0, **fields}
        with self.client() as c:
            return c.post("/v1/chat/completions", json=body)


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"tholos-mlx serve exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}"
            )
        try:
            r = httpx.get(f"{server.base}/health", headers=server.headers, timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"tholos-mlx serve did not answer /health in {timeout} s:\n{server.log_text()[-3000:]}"
    )


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send a signal, wait, and kill if it does not exit in time; return the exit status."""
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    return int(server.proc.returncode)


def start(home: Path, *flags: str, timeout: float = 120.0) -> Server:
    """Start `python -m tholos_mlx serve --home HOME --port P FLAGS...` and wait for /health."""
    from tholos_mlx.home import ensure_key

    if "--disk-cache-gb" not in flags:
        # Servers share the read-only demo home, and a prompt cache restored from an earlier
        # test's server would change `cached_tokens`: tests of the disk cache opt in.
        flags = (*flags, "--disk-cache-gb", "0")
    port = free_port()
    key = ensure_key(home)
    log = home.parent / f"serve-{home.name}-{port}.log"
    env = {**os.environ, "THOLOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tholos_mlx",
                "serve",
                "--home",
                str(home),
                "--port",
                str(port),
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
    server = Server(home, port, key, proc, log)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        stop(server)
        raise
    return server


class Servers:
    """Servers kept up for the whole session, one per home and flags, for modules that share one.

    Each start costs a process, a model load and a cold prompt cache; a module whose tests
    neither stop the server nor need its first request asks here instead of starting its own.
    """

    def __init__(self) -> None:
        self._up: dict[tuple[Path, tuple[str, ...]], Server] = {}

    def get(self, home: Path, *flags: str) -> Server:
        """The server for HOME and FLAGS, started on first use (again if an earlier module's died)."""
        key = (home, flags)
        server = self._up.get(key)
        if server is None or server.proc.poll() is not None:
            server = self._up[key] = start(home, *flags)
        return server

    def stop_all(self) -> None:
        """Stop every server this session started here."""
        for server in self._up.values():
            stop(server)
        self._up.clear()


@contextmanager
def running(home: Path, *flags: str) -> Iterator[Server]:
    """A server for the duration of a with-block: terminated, then killed if need be."""
    server = start(home, *flags)
    try:
        yield server
    finally:
        stop(server)
