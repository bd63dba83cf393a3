"""Server-sent event frames as bytes: OpenAI's `chat.completion.chunk` objects and [DONE]."""

from __future__ import annotations

import orjson

from tholos_mlx.errors import TholosError
from tholos_mlx.schema import Usage

DONE: bytes = b"data: [DONE]\n\n"
KEEPALIVE: bytes = b": keepalive\n\n"

_dumps = orjson.dumps


class ChunkEncoder:
    """Encodes the chunks of one streamed completion; content() is the per-token hot path."""

    __slots__ = ("_include_usage", "_head", "_content_head", "_tail")

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        self._include_usage = include_usage
        # Every chunk shares this head; content() only adds the dumped text between
        # two precomputed byte strings. tests/test_sse.py checks it equals the dict form.
        self._head = (
            b'data: {"id":'
            + _dumps(id)
            + b',"object":"chat.completion.chunk","created":'
            + _dumps(created)
            + b',"model":'
            + _dumps(model)
            + b',"system_fingerprint":null,"choices":'
        )
        self._content_head = self._head + b'[{"index":0,"delta":{"content":'
        self._tail = (
            b'},"logprobs":null,"finish_reason":null}]'
            + (b',"usage":null' if include_usage else b"")
            + b"}\n\n"
        )

    def content(self, text: str) -> bytes:
        """A chunk whose delta carries the next piece of text."""
        return self._content_head + _dumps(text) + self._tail

    def role(self) -> bytes:
        """The first chunk: the assistant role and empty content."""
        return self._frame({"role": "assistant", "content": ""}, None)

    def finish(self, finish_reason: str) -> bytes:
        """The last chunk of the choice: an empty delta and the finish reason."""
        return self._frame({}, finish_reason)

    def usage(self, usage: Usage) -> bytes:
        """The usage chunk sent after finish when include_usage is set: no choices."""
        return b"".join((self._head, b"[]", b',"usage":', _dumps(usage.as_dict()), b"}\n\n"))

    def _frame(self, delta: dict[str, str], finish_reason: str | None) -> bytes:
        """One chunk with a single choice, built from dicts (for the rare frames)."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        usage = b',"usage":null' if self._include_usage else b""
        return b"".join((self._head, _dumps([choice]), usage, b"}\n\n"))


def error_frame(err: TholosError) -> bytes:
    """An error sent after streaming started: one `data: {"error": ...}` event, no [DONE]."""
    return b"data: " + _dumps(err.body()) + b"\n\n"
