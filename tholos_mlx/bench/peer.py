"""The peer of a comparison: mlx-lm's own server on the same folder, or a server already running.

The peer gets the same chat messages as our server, streamed and greedy, and is timed the same
way from the client side. Its prompt cache stays as it comes; every run's prompt opens with a
fresh nonce line, so no cache (ours or the peer's) holds more than the chat template's first
tokens of it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from tholos_mlx.bench.client import BenchError, Endpoint, StreamStats, free_port, stream_chat
from tholos_mlx.bench.server import ServerProcess

MLX_LM_MODEL = "default_model"  # mlx-lm's server maps this name to its --model folder


@dataclass(frozen=True)
class PeerSpec:
    """What --peer / --peer-url and --peer-model asked for."""

    kind: Literal["mlx_lm", "url"]
    endpoint: Endpoint | None = None  # for "url"
    model: str | None = None  # for "url"


class Peer:
    """A running peer server for the length of a `with` block."""

    def __init__(self, spec: PeerSpec, folder: Path, log: Path) -> None:
        self.spec = spec
        self._process: ServerProcess | None = None
        if spec.kind == "mlx_lm":
            self.endpoint = Endpoint("127.0.0.1", free_port())
            self.model = MLX_LM_MODEL
            self.command = ["mlx_lm", "server", "--model", str(folder)]
            self.command += ["--port", str(self.endpoint.port), "--log-level", "WARNING"]
            self._process = ServerProcess(self.command, self.endpoint, log)
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

    def info(self) -> dict[str, Any]:
        """What a result records of the peer."""
        started = self._process is not None
        return {
            "kind": self.spec.kind,
            "name": "mlx-lm's own server" if started else f"the server at {self.endpoint.url}",
            "url": self.endpoint.url,
            "model": self.model,
            "command": " ".join(["python", "-m", *self.command]) if started else None,
            "version": _version("mlx-lm") if started else None,
            "python": sys.version.split()[0] if started else None,
        }


def chat_payload(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, object]:
    """The request body every side gets: streamed, greedy, usage in the last chunk."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
