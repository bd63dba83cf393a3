"""A server as a subprocess for the benchmark (ours or a peer): started, polled on /health, always stopped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tholos_mlx import machine, timings
from tholos_mlx.bench.sides.client import BenchError, Endpoint, free_port, get_json
from tholos_mlx.tiers import ModelEntry


class ServerProcess:
    """`python -m ARGS` serving at an endpoint; ready once /health answers 200."""

    def __init__(
        self, args: list[str], endpoint: Endpoint, log: Path, start_timeout: float = 300.0
    ):
        self.args = args
        self.endpoint = endpoint
        self.log = log
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._read_to = 0  # how far new_timings() has read the log

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None
        return self._proc.pid

    def rss_bytes(self) -> int:
        """The server's resident memory now."""
        return machine.rss_bytes(self.pid) if self._proc else 0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start it and wait for /health; fail fast with its log if it dies."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        # INFO: one line a request (never a token), and at exit the line with MLX's peak memory.
        env.setdefault("THOLOS_LOG_LEVEL", "INFO")
        self._read_to = 0
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", *self.args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BenchError(
                    f"the server exited with status {code} before it was ready:\n{self.tail()}"
                )
            try:
                status, _ = get_json(self.endpoint, "/health", timeout=2.0)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"the server was not ready after {self.start_timeout:g} s:\n{self.tail()}"
                )
            time.sleep(0.2)

    def stop(self, grace: float = 15.0) -> int | None:
        """Terminate it (a graceful stop for Sanic), then kill it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.terminate()
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def mlx_peak_mib(self) -> float | None:
        """MLX's own peak memory as the stopped server logged it (Metal buffers are not in RSS)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        peaks = re.findall(r"MLX memory active \d+ MiB, peak (\d+) MiB", text)
        return float(peaks[-1]) if peaks else None

    def new_timings(self) -> list[dict[str, float | None]]:
        """The figures of the timing lines (timings.py) logged since the last call, in order."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._read_to)
                data = f.read()
        except OSError:
            return []
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits for next time
        self._read_to += len(whole)
        lines = whole.decode("utf-8", errors="replace").splitlines()
        return [t for t in map(_timing, lines) if t is not None]

    def tail(self, lines: int = 20) -> str:
        """The end of its log, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# Figures a speculating server adds to its timing line (issue 20 item 7), when it does.
_DRAFTS = re.compile(r"\b(drafted|accepted|steps)=([0-9]+)")


def _timing(line: str) -> dict[str, float | None] | None:
    """The figures of one timing line, with its draft counts where the server logs them."""
    figures = timings.parse(line)
    if figures is not None:
        at = line.find(f" {timings.PREFIX} ")
        for name, value in _DRAFTS.findall(line[at:]):
            figures[name] = float(value)
    return figures


def tholos_server(
    home: Path,
    entry: ModelEntry,
    port: int | None,
    cache_off: bool,
    log: Path,
    extra: tuple[str, ...] = ("--disk-cache-gb", "0"),
) -> ServerProcess:
    """`tholos-mlx serve` on this model, on its own port (never a running server's).

    The disk prompt cache is off unless `extra` says otherwise: a cache saved by one case
    would flatter the next one's cold request."""
    from tholos_mlx.home import ensure_key

    to = Endpoint("127.0.0.1", port or free_port(), key=ensure_key(home))
    args = ["tholos_mlx", "serve", "--home", str(home), "--port", str(to.port), "--model", entry.id]
    args += ["--prompt-cache-mb", "0"] if cache_off else []
    return ServerProcess(args + list(extra), to, log)
