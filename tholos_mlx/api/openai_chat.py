"""OpenAI chat completions: the request body to a GenerationRequest, events back to OpenAI's JSON and chunks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from tholos_mlx.api import Dialect, exchange, sse
from tholos_mlx.api import fields as f
from tholos_mlx.api.coalesce import coalesced
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.shared_openai import response_format, tool_choice
from tholos_mlx.errors import InvalidRequest, TholosError, Unsupported
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
from tholos_mlx.request import (
    GenerationRequest,
    Message,
    Tool,
    ToolCall,
    Usage,
)

PATH = "/v1/chat/completions"
ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
MAX_STOPS = 4
_ID_LENGTH = 29  # the length of OpenAI's own "chatcmpl-" suffixes
_EXAMPLE = '{"messages": [{"role": "user", "content": "Hello"}]}'


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request: the internal request and what only this dialect's answer needs."""

    request: GenerationRequest
    include_usage: bool = False


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


# -- the request --


def parse_chat(body: bytes) -> ChatRequest:
    """Validate a raw /v1/chat/completions body; InvalidRequest names the offending param."""
    data = f.load_object(body, _EXAMPLE)
    messages = _messages(data)
    _refuse_shape_changers(data)
    max_tokens = f.positive_int(data, "max_tokens")
    max_completion_tokens = f.positive_int(data, "max_completion_tokens")
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest(
                f"'stream_options' must be an object such as {{\"include_usage\": true}}; "
                f"got {f.kind(options)}.",
                param="stream_options",
            )
        include_usage = f.boolean(options, "include_usage", param="stream_options.include_usage")
    stream = f.boolean(data, "stream")
    if options is not None and not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    tools = _tools(data)
    request = GenerationRequest(
        messages=messages,
        model=f.model_name(data),
        temperature=f.number(data, "temperature", 1.0, low=0.0, high=2.0, low_open=False),
        top_p=f.number(data, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        # max_completion_tokens is OpenAI's current name; it wins over the deprecated one.
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stop=f.stop_strings(data, "stop", MAX_STOPS),
        stream=stream,
        seed=f.optional_int(data, "seed"),
        response_format=response_format(data.get("response_format"), "response_format"),
        tools=tools,
        tool_choice=tool_choice(data.get("tool_choice"), tools, "tool_choice"),
        parallel_tool_calls=f.boolean(data, "parallel_tool_calls", default=True),
        prediction=_prediction(data.get("prediction")),
    )
    return ChatRequest(request, include_usage)


def _prediction(raw: object) -> str | None:
    """OpenAI's Predicted Outputs: {"type": "content", "content": text or text parts}."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "content":
        raise InvalidRequest(
            "'prediction' must be an object such as "
            '{"type": "content", "content": "the text you expect"}.',
            param="prediction",
        )
    return content_text(raw.get("content"), "prediction.content")


def _messages(data: Mapping[str, object]) -> tuple[Message, ...]:
    raw = f.messages(data.get("messages"))
    return tuple(_message(item, f"messages[{i}]") for i, item in enumerate(raw))


def _message(raw: object, where: str) -> Message:
    item = f.message_object(raw, where)
    role = item.get("role")
    allowed = "'system', 'developer', 'user', 'assistant' or 'tool'"
    if role is None:
        raise InvalidRequest(
            f"'{where}.role' is required: one of {allowed}.", param=f"{where}.role"
        )
    if role == "function":
        raise Unsupported(
            f"'{where}.role' is 'function', OpenAI's retired form of tool results; "
            'send {"role": "tool", "tool_call_id", "content"} instead.',
            param=f"{where}.role",
        )
    if not isinstance(role, str) or role not in ROLES:
        got = repr(role) if isinstance(role, str) else f.kind(role)
        raise InvalidRequest(
            f"'{where}.role' must be one of {allowed}; got {got}.", param=f"{where}.role"
        )
    role = ROLES[role]
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(
                f"'{where}.tool_call_id' is required on a tool message: the id of the call it answers.",
                param=f"{where}.tool_call_id",
            )
        content = content_text(item.get("content"), f"{where}.content")
        return Message("tool", content, tool_call_id=call_id)
    calls = (
        _tool_calls(item.get("tool_calls"), f"{where}.tool_calls") if role == "assistant" else ()
    )
    content = content_text(item.get("content"), f"{where}.content", assistant=role == "assistant")
    return Message(role, content, tool_calls=calls)  # type: ignore[arg-type]


def content_text(content: object, where: str, *, assistant: bool = False) -> str:
    """A message's content: a string, or text parts joined with "" (an assistant's may also
    be null, and hold the `refusal` parts OpenAI answers with: their text is what it said)."""
    if isinstance(content, str):
        return content
    if content is None:
        if assistant:  # an assistant turn may carry no text (OpenAI allows null)
            return ""
        raise InvalidRequest(
            f"'{where}' is required: a string or an array of "
            '{"type": "text", "text": ...} parts.',
            param=where,
        )
    if not isinstance(content, list):
        raise InvalidRequest(
            f'\'{where}\' must be a string or an array of {{"type": "text", "text": ...}} '
            f"parts; got {f.kind(content)}.",
            param=where,
        )
    if not content:
        raise InvalidRequest(
            f"'{where}' must not be an empty array: give at least one text part, or a string.",
            param=where,
        )
    return "".join(_text_part(part, f"{where}[{j}]", assistant) for j, part in enumerate(content))


def _text_part(part: object, where: str, assistant: bool) -> str:
    if not isinstance(part, dict):
        raise InvalidRequest(
            f'\'{where}\' must be an object {{"type": "text", "text": ...}}; got {f.kind(part)}.',
            param=where,
        )
    kind = part.get("type")
    if kind == "refusal" and assistant:
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise InvalidRequest(
                f"'{where}.refusal' must be a string; got {f.kind(refusal)}.",
                param=f"{where}.refusal",
            )
        return refusal
    if kind != "text":
        if isinstance(kind, str):
            raise Unsupported(
                f"'{where}.type' is {kind!r}, but this server accepts only text: "
                'use {"type": "text", "text": ...} parts or a plain string.',
                param=f"{where}.type",
            )
        raise InvalidRequest(
            f"'{where}.type' must be \"text\"; got {f.kind(kind)}.", param=f"{where}.type"
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(
            f"'{where}.text' must be a string; got {f.kind(text)}.", param=f"{where}.text"
        )
    return text


def _tool_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for i, call in enumerate(f.array(raw, where, "tool calls")):
        at = f"{where}[{i}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise InvalidRequest(
                f'\'{at}\' must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}.',
                param=at,
            )
        function = call.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(
                f"'{at}.function' must be an object with 'name' and 'arguments'.",
                param=f"{at}.function",
            )
        name, arguments, call_id = (
            function.get("name"),
            function.get("arguments", "{}"),
            call.get("id"),
        )
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"'{at}.function.name' must be a non-empty string.", param=f"{at}.function.name"
            )
        if not isinstance(arguments, str):
            raise InvalidRequest(
                f"'{at}.function.arguments' must be a string of JSON; got {f.kind(arguments)}.",
                param=f"{at}.function.arguments",
            )
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"'{at}.id' must be a non-empty string.", param=f"{at}.id")
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def _tools(data: Mapping[str, object]) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(f.array(data.get("tools"), "tools", "function tools")):
        where = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type") != "function":
            got = repr(item.get("type")) if isinstance(item, dict) else f.kind(item)
            raise InvalidRequest(
                f"'{where}.type' must be \"function\": this server calls functions only; got {got}.",
                param=f"{where}.type",
            )
        function = item.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(
                f"'{where}.function' must be an object with 'name' and 'parameters'; got {f.kind(function)}.",
                param=f"{where}.function",
            )
        tools.append(
            f.tool(
                function.get("name"),
                function.get("description"),
                function.get("parameters"),
                function.get("strict"),
                f"{where}.function",
            )
        )
    return f.distinct_names(tools, "function name")


def _refuse_shape_changers(data: Mapping[str, object]) -> None:
    """400 for OpenAI fields that would change the answer's shape; the rest are ignored."""
    n = data.get("n")
    if n is not None and not (f.is_int(n) and n == 1):
        if not f.is_int(n):
            raise InvalidRequest(f"'n' must be an integer; got {f.kind(n)}.", param="n")
        raise Unsupported(
            f"'n' must be 1: this server returns exactly one choice; got {n}.", param="n"
        )
    if f.boolean(data, "logprobs"):
        raise Unsupported(
            "'logprobs' is not supported by this server; leave it out or set it to false.",
            param="logprobs",
        )
    if data.get("top_logprobs") is not None:
        raise Unsupported(
            "'top_logprobs' is not supported by this server; leave it out.", param="top_logprobs"
        )
    modalities = data.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise Unsupported(
            "'modalities' can only be [\"text\"]: this server answers in text only.",
            param="modalities",
        )


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
    forced = parsed.request.tool_choice.mode in ("required", "function")
    return await exchange.run(request, parsed.request, _ChatReply(parsed.include_usage, forced))


def _mount(app: Any) -> None:
    app.add_route(_chat_completions, PATH, methods=["POST"], name="chat_completions")


DIALECT = Dialect("openai_chat", ("/v1/chat",), _mount, TholosError.body)  # OpenAI's own shape
