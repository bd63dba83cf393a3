"""A minimal streaming HTTP/1.1 client over a socket, for measuring the server from outside."""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from tholos_mlx.bench.results import StreamFigures

__all__ = [
    "BenchError", "Endpoint", "Stream", "StreamFigures", "StreamStats", "chat_payload", "figures",
    "free_port", "get_json", "messages_payload", "stream_chat", "stream_messages",
]  # fmt: skip

_RECV = 1 << 16


class BenchError(Exception):
    """A benchmark step failed: a server that died, a refused request, a broken stream."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server on this machine: host, port, the /v1 path, an optional key."""

    host: str
    port: int
    base: str = "/v1"
    key: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """http://HOST[:PORT][/PATH] -> an Endpoint; ValueError with the reason otherwise."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("give a plain http:// URL of a server on this machine")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError("not a port number") from None
        path = parts.path.rstrip("/")
        return cls(parts.hostname, port, path if path.endswith("/v1") else path + "/v1")

    @property
    def url(self) -> str:
        """The base URL, as a reader would type it."""
        return f"http://{self.host}:{self.port}{self.base}"


@dataclass
class StreamStats:
    """What the client saw of one streamed chat completion."""

    sent_at: float  # perf_counter when the request was written
    first_content_at: float | None = None
    last_content_at: float | None = None
    ended_at: float = 0.0
    content: list[str] = field(default_factory=list)
    frames: int = 0  # data events with content
    usage: dict[str, object] | None = None
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        """The whole answer text."""
        return "".join(self.content)


class Stream:
    """One POST whose response body arrives as it is sent; chunked transfer is undone here."""

    def __init__(self, to: Endpoint, path: str, body: bytes, timeout: float = 3600.0) -> None:
        self._sock = socket.create_connection((to.host, to.port), timeout=timeout)
        # Small writes must leave at once, as a real client's would.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {to.host}:{to.port}\r\n{_auth(to)}"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sent_at = time.perf_counter()
        self._sock.sendall(head + body)
        self._buf = bytearray()
        self.status, self.headers = self._read_head()

    def _recv(self) -> bytes:
        data = self._sock.recv(_RECV)
        if not data:
            raise BenchError("the server closed the connection mid-response")
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._recv()
        end = self._buf.index(b"\r\n\r\n")
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives (dechunked), until the server ends it."""
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            if self._buf:
                yield bytes(self._buf)
                self._buf.clear()
            while data := self._sock.recv(_RECV):
                yield data
            return
        buf = self._buf
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                buf += self._recv()
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            if size == 0:
                return
            need = eol + 2 + size + 2
            while len(buf) < need:
                buf += self._recv()
            yield bytes(buf[eol + 2 : eol + 2 + size])
            del buf[:need]

    def body(self) -> bytes:
        """The whole body (for error answers)."""
        return b"".join(self.pieces())

    def close(self) -> None:
        """Drop the connection."""
        self._sock.close()


def _auth(to: Endpoint) -> str:
    return f"Authorization: Bearer {to.key}\r\n" if to.key else ""


def chat_payload(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, object]:
    """The chat completion every side gets: streamed, greedy, usage in the last chunk."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def messages_payload(
    model: str, system: list[dict[str, str]], messages: list[dict[str, str]], max_tokens: int
) -> dict[str, object]:
    """An Anthropic Messages request as an agent sends it: system blocks, streamed, greedy."""
    return {
        "model": model,
        "system": system,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


def stream_chat(to: Endpoint, payload: dict[str, object]) -> StreamStats:
    """POST a streamed chat completion and time its content events as they arrive."""
    return _timed(to, f"{to.base}/chat/completions", payload, _take)


def stream_messages(to: Endpoint, payload: dict[str, object]) -> StreamStats:
    """POST a streamed Anthropic Messages request; its usage is given OpenAI's names."""
    return _timed(to, f"{to.base}/messages", payload, _take_anthropic)


def _timed(
    to: Endpoint,
    path: str,
    payload: dict[str, object],
    take: Callable[[StreamStats, bytes, float], None],
) -> StreamStats:
    stream = Stream(to, path, orjson.dumps(payload))
    try:
        if stream.status != 200:
            raise BenchError(f"HTTP {stream.status}: {stream.body()[:300]!r}")
        stats = StreamStats(sent_at=stream.sent_at)
        pending = b""
        for piece in stream.pieces():
            now = time.perf_counter()
            events = (pending + piece).split(b"\n\n")
            pending = events.pop()
            for event in events:
                take(stats, event, now)
        stats.ended_at = time.perf_counter()
        return stats
    finally:
        stream.close()


def _take(stats: StreamStats, event: bytes, now: float) -> None:
    if not event.startswith(b"data: ") or event == b"data: [DONE]":
        return
    chunk = orjson.loads(event[6:])
    if "error" in chunk:
        raise BenchError(f"error frame in the stream: {chunk['error']}")
    if chunk.get("usage"):
        stats.usage = chunk["usage"]
    for choice in chunk.get("choices") or ():
        text = choice.get("delta", {}).get("content")
        if text:
            stats.content.append(text)
            stats.frames += 1
            if stats.first_content_at is None:
                stats.first_content_at = now
            stats.last_content_at = now
        if choice.get("finish_reason"):
            stats.finish_reason = choice["finish_reason"]


def _take_anthropic(stats: StreamStats, event: bytes, now: float) -> None:
    data = next((line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")), None)
    if data is None:
        return
    body = orjson.loads(data)
    kind = body.get("type")
    if kind == "error":
        raise BenchError(f"error event in the stream: {body.get('error')}")
    usage = (body.get("message") or {}).get("usage") if kind == "message_start" else None
    if kind == "message_delta":
        usage = body.get("usage")
        stats.finish_reason = (body.get("delta") or {}).get("stop_reason")
    if usage:
        mine = dict(stats.usage or {})
        if "input_tokens" in usage:
            read = int(usage.get("cache_read_input_tokens") or 0)
            mine["prompt_tokens"] = int(usage["input_tokens"]) + read
            mine["prompt_tokens_details"] = {"cached_tokens": read}
        if "output_tokens" in usage and kind == "message_delta":
            mine["completion_tokens"] = int(usage["output_tokens"])
        stats.usage = mine
    text = (body.get("delta") or {}).get("text") if kind == "content_block_delta" else None
    if text:
        stats.content.append(text)
        stats.frames += 1
        if stats.first_content_at is None:
            stats.first_content_at = now
        stats.last_content_at = now


def figures(run: StreamStats, gen_tokens: int) -> StreamFigures:
    """Client-side figures of one streamed request (ours or a peer's)."""
    usage = run.usage or {}
    counted = "completion_tokens" in usage
    # A peer that sends no usage: one content chunk a token, as they stream.
    tokens = int(usage["completion_tokens"]) if counted else run.frames  # type: ignore[call-overload]
    details = usage.get("prompt_tokens_details") or {}
    first, last = run.first_content_at, run.last_content_at
    span = (last - first) if first is not None and last is not None else 0.0
    prompt = usage.get("prompt_tokens")
    return {
        "ttft_s": (first - run.sent_at) if first is not None else None,
        "decode_tps": (tokens - 1) / span if tokens > 1 and span > 0 else None,
        "completion_tokens": tokens,
        "prompt_tokens": prompt if isinstance(prompt, int) else None,
        "cached_tokens": details.get("cached_tokens", 0) if isinstance(details, dict) else 0,
        "stopped_early": tokens < gen_tokens,
        "tokens_from": "usage" if counted else "chunks",
    }


def get_json(to: Endpoint, path: str, timeout: float = 5.0) -> tuple[int, object]:
    """GET a JSON resource (for /health polling)."""
    with socket.create_connection((to.host, to.port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {to.host}:{to.port}\r\n{_auth(to)}"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(_RECV):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1])
    try:
        return status, orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return status, None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
