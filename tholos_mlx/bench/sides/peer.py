"""The peer of a comparison: mlx-lm's own server, a server already running, or ours on several ranks.

The peer gets the same chat messages as our server, streamed and greedy, and is timed the same
way from the client side. Its prompt cache stays as it comes; every run's prompt opens with a
fresh nonce line, so no cache (ours or the peer's) holds more than the chat template's first
tokens of it.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

from tholos_mlx.bench.plan import PeerSpec
from tholos_mlx.bench.results import PeerInfo
from tholos_mlx.bench.sides.client import (
    BenchError,
    Endpoint,
    StreamStats,
    chat_payload,
    free_port,
    stream_chat,
)
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.tiers import ModelEntry

MLX_LM_MODEL = "default_model"  # mlx-lm's server maps this name to its --model folder


_NAMES = {
    "mlx_lm": "mlx-lm's own server",
    "ranks": "our server on several ranks (serve --hostfile)",
}


class Peer:
    """A running peer server for the length of a `with` block."""

    def __init__(self, spec: PeerSpec, home: Path, entry: ModelEntry, log: Path) -> None:
        self.spec = spec
        self._process: ServerProcess | None = None
        if spec.kind == "mlx_lm":
            self.endpoint = Endpoint("127.0.0.1", free_port())
            self.model = MLX_LM_MODEL
            self.command = ["mlx_lm", "server", "--model", str(entry.path)]
            self.command += ["--port", str(self.endpoint.port), "--log-level", "WARNING"]
            self._process = ServerProcess(self.command, self.endpoint, log)
        elif spec.kind == "ranks":
            assert spec.hostfile is not None
            # Our own server, as one process is run beside it: the same caches off.
            flags = ("--disk-cache-gb", "0", "--hostfile", str(spec.hostfile))
            self._process = tholos_server(home, entry, None, True, log, flags)
            self.endpoint, self.model = self._process.endpoint, entry.id
            self.command = self._process.args
        else:
            assert spec.endpoint is not None and spec.model is not None
            self.endpoint, self.model, self.command = spec.endpoint, spec.model, []

    def __enter__(self) -> Self:
        if self._process is not None:
            self._process.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.stop()

    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> StreamStats:
        """One streamed, greedy chat completion."""
        try:
            return stream_chat(self.endpoint, chat_payload(self.model, messages, max_tokens))
        except OSError as exc:
            raise BenchError(f"cannot reach the peer at {self.endpoint.url}: {exc}") from None

    def rss_bytes(self) -> int | None:
        """The peer process's resident memory, when the bench started it."""
        return self._process.rss_bytes() if self._process is not None else None

    def info(self) -> PeerInfo:
        """What a result records of the peer."""
        started = self._process is not None
        dist = "tholos-mlx" if self.spec.kind == "ranks" else "mlx-lm"
        return {
            "kind": self.spec.kind,
            "name": _NAMES.get(self.spec.kind, f"the server at {self.endpoint.url}"),
            "url": self.endpoint.url,
            "model": self.model,
            "command": " ".join(["python", "-m", *self.command]) if started else None,
            "version": _version(dist) if started else None,
            "python": sys.version.split()[0] if started else None,
        }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
