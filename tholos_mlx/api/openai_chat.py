"""OpenAI chat completions: the request body to a GenerationRequest, events back to OpenAI's JSON and chunks."""

from __future__ import annotations

import time
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from tholos_mlx.api import Dialect, exchange, sse
from tholos_mlx.api.coalesce import coalesced
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.openai_chat_request import parse_chat
from tholos_mlx.errors import TholosError
from tholos_mlx.events import (
    Delta,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.ids import alnum_id
from tholos_mlx.request import Usage

PATH = "/v1/chat/completions"
_ID_LENGTH = 29  # the length of OpenAI's own "chatcmpl-" suffixes


def new_completion_id() -> str:
    """A fresh random completion id shaped like OpenAI's: "chatcmpl-" and 29 letters/digits."""
    return alnum_id("chatcmpl-", _ID_LENGTH)


def usage_object(usage: Usage) -> dict[str, object]:
    """The OpenAI `usage` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {
            "accepted_prediction_tokens": usage.accepted_prediction_tokens,
            "rejected_prediction_tokens": usage.rejected_prediction_tokens,
        },
    }


# -- the answer --


def completion_body(
    *,
    id: str,
    created: int,
    model: str,
    answer: Gathered,
    finished: Finished,
    calls_only: bool = False,
) -> bytes:
    """The JSON bytes of OpenAI's non-streamed `chat.completion` object.

    `content` is null when there is no text and the answer is calls, or could only have been
    (a forced call cut by max_tokens before it was named), as the stream's first chunk says."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if answer.text or not (answer.calls or calls_only) else None,
        "refusal": None,
    }
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.calls
        ]
    return orjson.dumps(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finished.finish_reason,
                }
            ],
            "usage": usage_object(finished.usage),
            "system_fingerprint": None,
        }
    )


def complete(
    started: Started, answer: Gathered, finished: Finished, calls_only: bool = False
) -> bytes:
    """The whole answer to a non-streamed request."""
    return completion_body(
        id=new_completion_id(),
        created=int(time.time()),
        model=started.model,
        answer=answer,
        finished=finished,
        calls_only=calls_only,
    )


class ChunkEncoder:
    """Encodes the chunks of one streamed completion; content() is the per-token hot path."""

    __slots__ = ("_include_usage", "_head", "_content_head", "_tail")

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        self._include_usage = include_usage
        # Every chunk shares this head; content() only adds the dumped text between
        # two precomputed byte strings. The tests check it equals the dict form.
        self._head = (
            b'data: {"id":'
            + orjson.dumps(id)
            + b',"object":"chat.completion.chunk","created":'
            + orjson.dumps(created)
            + b',"model":'
            + orjson.dumps(model)
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
        return self._content_head + orjson.dumps(text) + self._tail

    def role(self, content: str | None = "") -> bytes:
        """The first chunk: the assistant role, and content "" (or null when a call is forced)."""
        return self.delta({"role": "assistant", "content": content})

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        """One chunk with a single choice, built from dicts (for the rare frames)."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        usage = b',"usage":null' if self._include_usage else b""
        return b"".join((self._head, orjson.dumps([choice]), usage, b"}\n\n"))

    def finish(self, finish_reason: str) -> bytes:
        """The last chunk of the choice: an empty delta and the finish reason."""
        return self.delta({}, finish_reason)

    def usage(self, usage: Usage) -> bytes:
        """The usage chunk sent after finish when include_usage is set: no choices."""
        return b"".join(
            (self._head, b"[]", b',"usage":', orjson.dumps(usage_object(usage)), b"}\n\n")
        )


class ChatStream:
    """One streamed chat completion: events in, SSE bytes out."""

    def __init__(self, started: Started, include_usage: bool, calls_only: bool = False) -> None:
        self._enc = ChunkEncoder(
            id=new_completion_id(),
            created=int(time.time()),
            model=started.model,
            include_usage=include_usage,
        )
        self._include_usage = include_usage
        self._calls_only = calls_only

    def head(self) -> bytes:
        """The first chunk, with the role; content null when the answer can only be calls, as OpenAI's."""
        return self._enc.role(None if self._calls_only else "")

    def render(self, batch: list[Event]) -> tuple[bytes, bool]:
        """The bytes for a batch of events, and whether the stream is complete."""
        out: list[bytes] = []
        for ev in coalesced(batch):  # a batch's run of text is one chunk: one write per batch
            if isinstance(ev, Delta):
                out.append(self._enc.content(ev.text))
            elif isinstance(ev, ReasoningDelta):
                out.append(self._enc.delta({"reasoning_content": ev.text}))
            elif isinstance(ev, ToolCallStart):
                call = {
                    "index": ev.index,
                    "id": ev.id,
                    "type": "function",
                    "function": {"name": ev.name, "arguments": ""},
                }
                out.append(self._enc.delta({"tool_calls": [call]}))
            elif isinstance(ev, ToolCallDelta):
                out.append(
                    self._enc.delta(
                        {
                            "tool_calls": [
                                {"index": ev.index, "function": {"arguments": ev.arguments}}
                            ]
                        }
                    )
                )
            elif isinstance(ev, Finished):
                out.append(self._enc.finish(ev.finish_reason))
                if self._include_usage:
                    out.append(self._enc.usage(ev.usage))
                out.append(sse.DONE)
                return b"".join(out), True
            elif isinstance(ev, BaseException):
                out.append(self.error(ev))
                return b"".join(out), True
        return b"".join(out), False

    def error(self, exc: BaseException) -> bytes:
        """After the headers an error is one event, and no [DONE] follows."""
        return sse.data(sse.as_tholos(exc).body())


# -- the route --


def wants_plain(request: Request) -> bool:
    """`Accept: text/plain` (and not JSON): answer with only the text, for shell scripts."""
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


class _ChatReply:
    def __init__(self, include_usage: bool, calls_only: bool) -> None:
        self._include_usage = include_usage
        self._calls_only = calls_only

    def complete(self, request: Request, started: Started, answer: Gathered) -> HTTPResponse:
        assert answer.finished is not None
        if wants_plain(request):
            return HTTPResponse(answer.text, content_type="text/plain; charset=utf-8")
        return HTTPResponse(
            complete(started, answer, answer.finished, self._calls_only),
            content_type="application/json",
        )

    def stream(self, started: Started) -> ChatStream:
        return ChatStream(started, self._include_usage, self._calls_only)


async def _chat_completions(request: Request) -> HTTPResponse | None:
    parsed = parse_chat(request.body)
    forced = parsed.request.tool_choice.forced
    return await exchange.run(request, parsed.request, _ChatReply(parsed.include_usage, forced))


def _mount(app: Any) -> None:
    app.add_route(_chat_completions, PATH, methods=["POST"], name="chat_completions")


DIALECT = Dialect("openai_chat", ("/v1/chat",), _mount, TholosError.body)  # OpenAI's own shape
