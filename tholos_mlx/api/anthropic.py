"""Anthropic Messages: POST /v1/messages and /v1/messages/count_tokens over the one engine.

The request is parsed in `anthropic_request`; this module renders the engine's events as
Anthropic's message object or its named SSE events, and errors in Anthropic's shape. Thinking
(ReasoningDelta) becomes `thinking` blocks when the request enabled `thinking`, as Anthropic
does; otherwise it is dropped, so `content` holds only the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from tholos_mlx.api import Dialect, exchange, sse
from tholos_mlx.api.anthropic_request import parse_messages
from tholos_mlx.api.coalesce import coalesced
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.errors import ContextLengthExceeded, TholosError
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
from tholos_mlx.tiers import TierTable

PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
_ID_LENGTH = 24
# Anthropic's error types by HTTP status; 503 is "overloaded" (Anthropic itself uses 529).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


def new_message_id() -> str:
    """A fresh random message id shaped like Anthropic's: "msg_" and letters/digits."""
    return alnum_id("msg_", _ID_LENGTH)


def tool_use_id(call_id: str) -> str:
    """The engine's call id ("call_X") as Anthropic writes it ("toolu_X"); others unchanged."""
    return "toolu_" + call_id[len("call_") :] if call_id.startswith("call_") else call_id


def usage_object(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: input_tokens are the prompt tokens NOT read from the prompt cache."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def stop_reason(finished: Finished) -> str:
    """Anthropic's stop_reason for how the generation ended."""
    if finished.finish_reason == "tool_calls":
        return "tool_use"
    if finished.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if finished.stop_sequence is not None else "end_turn"


def error_body(err: TholosError) -> dict[str, object]:
    """Anthropic's error object: {"type": "error", "error": {"type", "message"}}."""
    kind = ERROR_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    message = err.message
    if isinstance(err, ContextLengthExceeded) and err.tokens is not None and err.context:
        # Anthropic's own words: agents (Claude Code) look for them to compact their history.
        # The maximum is the longest prompt that leaves room for one token of answer.
        message = f"prompt is too long: {err.tokens} tokens > {err.context - 1} maximum"
    return {"type": "error", "error": {"type": kind, "message": message}}


@dataclass
class _HeldCall:
    """A streamed tool call not yet sent: its id, name and arguments so far."""

    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


def _input(arguments: str) -> dict[str, Any] | None:
    """A call's arguments as the `input` object; None when they were cut short (max_tokens)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- the answer --


def message_body(
    started: Started, answer: Gathered, thinking: bool, calls_only: bool = False
) -> dict[str, Any]:
    """The whole message object of a non-streamed answer.

    `calls_only` (a forced tool_choice): the answer can only be calls, so one cut before its
    first call is whole has no content at all rather than an empty text block."""
    finished = answer.finished
    assert finished is not None
    content: list[dict[str, Any]] = []
    if thinking and answer.reasoning:
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
    # A call cut by max_tokens has no whole `input`, and one that fails the tool's schema must
    # never reach a client that runs tools: it is left out (stop_reason says max_tokens).
    calls = [(c, args) for c in answer.calls if (args := _input(c.arguments)) is not None]
    # An empty answer still has its (empty) text block; a call cut short adds none (bug 3):
    # the stream, which cannot know a call will be cut, sends none either.
    if answer.text or not (answer.calls or calls_only):
        content.append({"type": "text", "text": answer.text})
    content.extend(
        {"type": "tool_use", "id": tool_use_id(c.id), "name": c.name, "input": args}
        for c, args in calls
    )
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": started.model,
        "content": content,
        "stop_reason": stop_reason(finished),
        "stop_sequence": finished.stop_sequence,
        "usage": usage_object(finished.usage),
    }


class MessagesStream:
    """One streamed message: events in, Anthropic's named SSE events out, in Anthropic's order."""

    def __init__(self, started: Started, thinking: bool, calls_only: bool = False) -> None:
        self._started = started
        self._calls_only = calls_only
        self._thinking = thinking
        self._index = -1  # the index of the open (or last) content block
        self._open: str | None = None  # its type, while one is open
        self._answered = False  # a text or tool_use block was opened
        self._pinged = False
        self._called = False  # a tool call was begun, whole or not
        # A call is held until it is known whole: one cut by max_tokens is never sent (its
        # input would fail the tool's schema), as the non-streamed answer leaves it out.
        self._held: _HeldCall | None = None

    def head(self) -> bytes:
        """message_start: the message with empty content and the prompt's usage."""
        usage = usage_object(Usage(self._started.prompt_tokens, 0, self._started.cached_tokens))
        message: dict[str, Any] = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._started.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return sse.event("message_start", {"type": "message_start", "message": message})

    def render(self, batch: list[Event]) -> tuple[bytes, bool]:
        """The bytes for a batch of events, and whether the stream is complete."""
        out: list[bytes] = []
        shown = batch if self._thinking else [e for e in batch if not isinstance(e, ReasoningDelta)]
        for ev in coalesced(shown):  # a run of pieces of one kind goes out as one delta
            if isinstance(ev, (Delta, ReasoningDelta)):
                self._call(out)
                self._text(out, "text" if isinstance(ev, Delta) else "thinking", ev.text)
            elif isinstance(ev, ToolCallStart):
                self._call(out)  # a call that another follows was whole
                self._held = _HeldCall(ev.id, ev.name)
                self._called = True
            elif isinstance(ev, ToolCallDelta):
                if self._held is not None:
                    self._held.arguments.append(ev.arguments)
            elif isinstance(ev, Finished):
                self._finish(out, ev)
                return b"".join(out), True
            elif isinstance(ev, BaseException):
                out.append(self.error(ev))
                return b"".join(out), True
        return b"".join(out), False

    def error(self, exc: BaseException) -> bytes:
        """After the headers an error is one `error` event, and the stream ends."""
        return sse.event("error", error_body(sse.as_tholos(exc)))

    def _call(self, out: list[bytes], *, cut: bool = False) -> None:
        """Send the held call as one tool_use block, unless the token limit cut it."""
        held, self._held = self._held, None
        if held is None:
            return
        arguments = "".join(held.arguments)
        if cut and _input(arguments) is None:
            return
        block = {"type": "tool_use", "id": tool_use_id(held.id), "name": held.name, "input": {}}
        self._start(out, block)
        delta = {"type": "input_json_delta", "partial_json": arguments}
        out.append(self._delta(self._index, delta))

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        if not text:
            return
        if self._open != kind:
            if kind == "text":
                self._start(out, {"type": "text", "text": ""})
            else:
                self._start(out, {"type": "thinking", "thinking": "", "signature": ""})
        if kind == "text":
            out.append(self._delta(self._index, {"type": "text_delta", "text": text}))
        else:
            out.append(self._delta(self._index, {"type": "thinking_delta", "thinking": text}))

    def _start(self, out: list[bytes], block: dict[str, Any]) -> None:
        self._stop(out)
        self._index += 1
        self._open = block["type"]
        self._answered = self._answered or block["type"] != "thinking"
        out.append(
            sse.event(
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )
        if not self._pinged:  # Anthropic's order: the first block's start, then a ping
            self._pinged = True
            out.append(sse.event("ping", {"type": "ping"}))

    def _stop(self, out: list[bytes]) -> None:
        if self._open is not None:
            self._open = None
            out.append(
                sse.event(
                    "content_block_stop", {"type": "content_block_stop", "index": self._index}
                )
            )

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return sse.event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _finish(self, out: list[bytes], finished: Finished) -> None:
        self._call(out, cut=finished.finish_reason == "length")
        if not (self._answered or self._called or self._calls_only):  # as message_body
            self._start(out, {"type": "text", "text": ""})
        self._stop(out)
        delta = {"stop_reason": stop_reason(finished), "stop_sequence": finished.stop_sequence}
        out.append(
            sse.event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": usage_object(finished.usage)},
            )
        )
        out.append(sse.event("message_stop", {"type": "message_stop"}))


# -- the routes --


class _MessagesReply:
    def __init__(self, thinking: bool, calls_only: bool) -> None:
        self._thinking = thinking
        self._calls_only = calls_only

    def complete(self, request: Request, started: Started, answer: Gathered) -> HTTPResponse:
        body = orjson.dumps(message_body(started, answer, self._thinking, self._calls_only))
        return HTTPResponse(body, content_type="application/json")

    def stream(self, started: Started) -> MessagesStream:
        return MessagesStream(started, self._thinking, self._calls_only)


async def _messages(request: Request) -> HTTPResponse | None:
    parsed = parse_messages(request.body)
    forced = parsed.request.tool_choice.forced
    return await exchange.run(request, parsed.request, _MessagesReply(parsed.thinking, forced))


async def _count_tokens(request: Request) -> HTTPResponse:
    """The prompt's length as /v1/messages would render it; no turn in the queue."""
    req = parse_messages(request.body, count_only=True).request
    tiers: TierTable = request.app.ctx.tiers
    engine: exchange.EngineLike = request.app.ctx.engine
    entry = tiers.resolve(req.model) if req.model else None
    count = await engine.count_tokens(req, entry)
    return HTTPResponse(orjson.dumps({"input_tokens": count}), content_type="application/json")


def _mount(app: Any) -> None:
    app.add_route(_messages, PATH, methods=["POST"], name="anthropic_messages")
    app.add_route(_count_tokens, COUNT_PATH, methods=["POST"], name="anthropic_count_tokens")


DIALECT = Dialect("anthropic", (PATH,), _mount, error_body)
