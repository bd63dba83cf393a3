"""Tests for tholos_mlx.api.anthropic: its answers and events, then the routes over real HTTP.

The HTTP tests run the app with the FakeEngine on a real port, with httpx for raw bodies and
SSE transcripts and with the official `anthropic` SDK for what its users see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import WAIT_S, FakeEngine, LiveServer, Script, engine_held, live_server
from tholos_mlx.api.anthropic import (
    MessagesStream,
    error_body,
    message_body,
    stop_reason,
    tool_use_id,
    usage_object,
)
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.errors import (
    ContextLengthExceeded,
    ForbiddenHost,
    InvalidApiKey,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from tholos_mlx.events import (
    Delta,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.request import Message, ToolCall, ToolChoice, Usage

HELLO: dict[str, Any] = {"max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
WEATHER: anthropic.types.ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = (
    ToolCallStart(0, "call_abc123", "get_weather"),
    ToolCallDelta(0, '{"city": '),
    ToolCallDelta(0, '"Paris"}'),
)
MESSAGE_KEYS = {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
STARTED = Started("alpha", prompt_tokens=12, cached_tokens=5)


def gathered(*events: Event) -> Gathered:
    answer = Gathered()
    for ev in events:
        answer.add(ev)
    return answer


def finished(reason: Any = "stop", stop: str | None = None) -> Finished:
    return Finished(reason, Usage(12, 3, 5), stop)


# -- the answer, unit --


def test_usage_counts_input_tokens_as_anthropic_does_without_the_cached_ones() -> None:
    assert usage_object(Usage(12, 3, 5)) == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": 3,
    }


@pytest.mark.parametrize(
    "ending,expected",
    [
        (Finished("stop", Usage(1, 1)), "end_turn"),
        (Finished("stop", Usage(1, 1), "END"), "stop_sequence"),
        (Finished("length", Usage(1, 1)), "max_tokens"),
        (Finished("tool_calls", Usage(1, 1)), "tool_use"),
    ],
)
def test_each_way_of_ending_has_its_stop_reason(ending: Finished, expected: str) -> None:
    assert stop_reason(ending) == expected


def test_a_text_answer_is_exactly_anthropics_message_object() -> None:
    body = message_body(STARTED, gathered(Delta("Hi"), Delta(" there"), finished()), False)
    assert set(body) == MESSAGE_KEYS
    assert body["id"].startswith("msg_") and len(body["id"]) > 10
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "alpha"
    assert body["content"] == [{"type": "text", "text": "Hi there"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == usage_object(Usage(12, 3, 5))
    anthropic.types.Message.model_validate(body)  # the SDK's own type accepts it


def test_a_tool_call_is_a_tool_use_block_with_a_toolu_id_and_parsed_input() -> None:
    answer = gathered(Delta("Checking."), *CALL, finished("tool_calls"))
    body = message_body(STARTED, answer, False)
    assert body["content"] == [
        {"type": "text", "text": "Checking."},
        {
            "type": "tool_use",
            "id": "toolu_abc123",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
    ]
    assert body["stop_reason"] == "tool_use"
    anthropic.types.Message.model_validate(body)


def test_a_call_alone_has_no_text_block_and_an_empty_answer_has_one_empty_text_block() -> None:
    calls_only = message_body(STARTED, gathered(*CALL, finished("tool_calls")), False)
    assert [b["type"] for b in calls_only["content"]] == ["tool_use"]
    empty = message_body(STARTED, gathered(finished()), False)
    assert empty["content"] == [{"type": "text", "text": ""}]


def test_a_call_cut_short_by_max_tokens_is_left_out_never_sent_with_a_made_up_input() -> None:
    cut = gathered(ToolCallStart(0, "call_x", "f"), ToolCallDelta(0, '{"a": '), finished("length"))
    body = message_body(STARTED, cut, False)
    assert body["content"] == []  # no call with a made-up input, and no empty text block
    assert body["stop_reason"] == "max_tokens"
    whole_then_cut = gathered(
        *CALL, ToolCallStart(1, "call_y", "f"), ToolCallDelta(1, '{"a'), finished("length")
    )
    kept = message_body(STARTED, whole_then_cut, False)["content"]
    assert [(b["type"], b.get("input")) for b in kept] == [("tool_use", {"city": "Paris"})]


def test_thinking_is_a_thinking_block_only_when_the_request_enabled_it() -> None:
    answer = gathered(ReasoningDelta("Hmm."), Delta("Paris"), finished())
    with_thinking = message_body(STARTED, answer, True)["content"]
    assert with_thinking == [
        {"type": "thinking", "thinking": "Hmm.", "signature": ""},
        {"type": "text", "text": "Paris"},
    ]
    assert message_body(STARTED, answer, False)["content"] == [{"type": "text", "text": "Paris"}]


def test_engine_call_ids_become_toolu_ids_and_other_ids_stay() -> None:
    assert tool_use_id("call_XYZ") == "toolu_XYZ"
    assert tool_use_id("toolu_XYZ") == "toolu_XYZ"


@pytest.mark.parametrize(
    "err,type_",
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (ContextLengthExceeded("long"), "invalid_request_error"),
        (InvalidApiKey("key"), "authentication_error"),
        (ForbiddenHost("host"), "permission_error"),
        (ModelNotFound("model"), "not_found_error"),
        (PayloadTooLarge("big"), "request_too_large"),
        (RateLimited("busy", retry_after=3), "rate_limit_error"),
        (ServiceUnavailable("later", retry_after=3), "overloaded_error"),
        (ServerError("oops"), "api_error"),
    ],
)
def test_errors_take_anthropics_shape_and_type(err: Any, type_: str) -> None:
    assert error_body(err) == {"type": "error", "error": {"type": type_, "message": err.message}}


def test_a_context_error_with_its_numbers_uses_anthropics_words() -> None:
    err = ContextLengthExceeded("long", tokens=9000, context=8192)
    assert error_body(err)["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 9000 tokens > 8191 maximum",
    }


# -- the stream, unit --


def transcript(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; checks every event names its data's type."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = []
    for frame in text[:-2].split("\n\n"):
        lines = [line for line in frame.split("\n") if not line.startswith(":")]
        if not lines:
            continue  # a keepalive comment
        name_line, data_line = lines
        assert name_line.startswith("event: ") and data_line.startswith("data: "), frame
        name, data = name_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name
        events.append((name, data))
    return events


def stream_all(batches: list[list[Event]], thinking: bool = False) -> list[tuple[str, Any]]:
    stream = MessagesStream(STARTED, thinking)
    raw = [stream.head()]
    done = False
    for batch in batches:
        assert not done
        out, done = stream.render(batch)
        raw.append(out)
    assert done
    return transcript(b"".join(raw))


def test_a_streamed_text_answer_has_anthropics_events_in_anthropics_order() -> None:
    events = stream_all([[Delta("Hel")], [Delta("lo"), Delta("!")], [finished()]])
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == usage_object(Usage(12, 0, 5))
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo!"}]
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": usage_object(Usage(12, 3, 5)),
    }


def test_a_streamed_tool_call_is_a_tool_use_block_with_input_json_deltas() -> None:
    events = stream_all([[Delta("Let me see.")], list(CALL), [finished("tool_calls")]])
    blocks = [(d["index"], d["content_block"]) for n, d in events if n == "content_block_start"]
    assert blocks == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "toolu_abc123", "name": "get_weather", "input": {}}),
    ]
    partial = [
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["index"] == 1
    ]
    assert json.loads("".join(partial)) == {"city": "Paris"}
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_reasoning_streams_as_a_thinking_block_only_when_enabled() -> None:
    batches: list[list[Event]] = [[ReasoningDelta("Hmm"), ReasoningDelta(".")], [Delta("Paris")]]
    on = stream_all([*batches, [finished()]], thinking=True)
    starts = [d["content_block"]["type"] for n, d in on if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert {"type": "thinking_delta", "thinking": "Hmm."} in [
        d["delta"] for n, d in on if n == "content_block_delta"
    ]
    off = stream_all([*batches, [finished()]], thinking=False)
    assert [d["content_block"]["type"] for n, d in off if n == "content_block_start"] == ["text"]
    assert "Hmm" not in json.dumps(off)


def blocks_of(events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks a client assembles from a stream's events, as the SDK does."""
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta" and data["delta"]["type"] == "text_delta":
            blocks[data["index"]]["text"] += data["delta"]["text"]
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            partial[data["index"]] = partial.get(data["index"], "") + data["delta"]["partial_json"]
        elif name == "content_block_delta":
            blocks[data["index"]]["thinking"] += data["delta"]["thinking"]
    for index, text in partial.items():
        blocks[index]["input"] = json.loads(text)  # a sent call's input is always whole JSON
    return blocks


CUT_ANSWERS: dict[str, list[Event]] = {
    "a call cut inside its arguments": [
        ToolCallStart(0, "call_x", "get_weather"),
        ToolCallDelta(0, '{"city": "Pa'),
    ],
    "text, then a call cut": [
        Delta("Checking."),
        ToolCallStart(0, "call_x", "get_weather"),
        ToolCallDelta(0, '{"ci'),
    ],
    "a whole call, then a second one cut": [
        *CALL,
        ToolCallStart(1, "call_y", "get_weather"),
        ToolCallDelta(1, '{"city"'),
    ],
    "a call cut right after its name": [ToolCallStart(0, "call_x", "get_weather")],
    "a call whose arguments were whole when the limit came": list(CALL),
}


@pytest.mark.parametrize("events", CUT_ANSWERS.values(), ids=list(CUT_ANSWERS))
@pytest.mark.parametrize("forced", [False, True], ids=["auto", "forced"])
def test_a_call_cut_by_max_tokens_streams_the_same_blocks_as_the_whole_answer_never_an_empty_text(
    events: list[Event], forced: bool
) -> None:
    ending = finished("length")
    whole = message_body(STARTED, gathered(*events, ending), False, forced)["content"]
    for batches in ([*([ev] for ev in events), [ending]], [[*events, ending]]):
        assert blocks_of(stream_all(batches)) == whole
    assert {"type": "text", "text": ""} not in whole
    for block in whole:
        if block["type"] == "tool_use":
            assert block["input"] == {"city": "Paris"}


def test_a_forced_call_cut_before_it_began_has_no_content_streamed_or_not() -> None:
    ending = finished("length")
    assert message_body(STARTED, gathered(ending), False, calls_only=True)["content"] == []
    stream = MessagesStream(STARTED, False, calls_only=True)
    events = transcript(stream.head() + stream.render([ending])[0])
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_a_streamed_call_is_sent_once_whole_never_before_its_end_is_known() -> None:
    stream = MessagesStream(STARTED, False)
    stream.head()
    held, done = stream.render(list(CALL))
    assert held == b"" and not done  # the limit may yet cut it
    out, done = stream.render([finished("tool_calls")])
    names = [n for n, _ in transcript(out)]
    assert names[:4] == ["content_block_start", "ping", "content_block_delta", "content_block_stop"]


def test_an_empty_streamed_answer_still_has_one_empty_text_block() -> None:
    events = stream_all([[finished("length")]])
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_an_error_mid_stream_is_one_error_event_that_ends_it_without_internals() -> None:
    events = stream_all([[Delta("one")], [RuntimeError("secret internals")]])
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["type"] == "api_error"
    assert "secret" not in json.dumps(events)
    assert "message_stop" not in [n for n, _ in events]


# -- over HTTP, with the fake engine --


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that only read or script their own answer."""
    with live_server(tmp_path_factory.mktemp("home")) as s:
        yield s


@pytest.fixture
def sdk(shared: LiveServer) -> Iterator[anthropic.Anthropic]:
    """The official client pointed at the server as the docs say: base URL and key, no retries."""
    with anthropic.Anthropic(base_url=shared.url, api_key=shared.key, max_retries=0) as client:
        yield client


def headers(server: LiveServer, key: str | None = None) -> dict[str, str]:
    """Anthropic's headers: x-api-key and the version and beta headers the SDKs send."""
    return {
        "x-api-key": server.key if key is None else key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
    }


def post(server: LiveServer, body: Any, path: str = "/v1/messages", **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as c:
        return c.post(path, json=body, headers=kw.pop("headers", None) or headers(server), **kw)


def anthropic_error(r: httpx.Response, status: int, type_: str) -> str:
    """Assert Anthropic's error shape, status and type; return the message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == type_
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "Traceback" not in message
    return str(message)


def test_a_message_over_http_has_anthropics_shape(shared: LiveServer) -> None:
    shared.engine.scripts.append(Script(pieces=("Hi", "!"), prompt_tokens=9, cached_tokens=4))
    r = post(shared, {**HELLO, "model": "alpha", "metadata": {"user_id": "u"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == MESSAGE_KEYS
    assert body["content"] == [{"type": "text", "text": "Hi!"}]
    assert body["model"] == "alpha"
    assert body["usage"]["input_tokens"] == 5 and body["usage"]["cache_read_input_tokens"] == 4


def test_the_bearer_header_is_accepted_too(shared: LiveServer) -> None:
    r = post(shared, HELLO, headers={"Authorization": f"Bearer {shared.key}"})
    assert r.status_code == 200, r.text


def test_what_the_client_sent_reaches_the_engine(shared: LiveServer) -> None:
    body = {
        **HELLO,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "temperature": 0.2,
        "top_k": 5,
        "stop_sequences": ["END"],
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
    }
    before = len(shared.engine.jobs)
    assert post(shared, body).status_code == 200
    req = shared.engine.wait_jobs(before + 1)[-1].request
    assert req.messages == (Message("system", "Be brief."), Message("user", "Hello"))
    assert (req.temperature, req.top_k, req.stop, req.max_tokens) == (0.2, 5, ("END",), 16)
    assert [t.name for t in req.tools] == ["get_weather"]
    assert req.tool_choice == ToolChoice("required")


def test_a_raw_sse_transcript_has_anthropics_events_in_order(shared: LiveServer) -> None:
    shared.engine.scripts.append(Script(events=(Delta("It is "), Delta("sunny."), *CALL)))
    r = post(shared, {**HELLO, "stream": True, "tools": [WEATHER]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = transcript(r.content)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    # blocks open and close in turn, their deltas in between
    open_block: int | None = None
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_block is None
            open_block = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_block
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
    assert open_block is None
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "It is sunny."


def test_streamed_text_equals_the_non_streamed_text(shared: LiveServer) -> None:
    pieces = ("Bonjour", ", ", "le ", "monde", " é")
    shared.engine.scripts += [Script(pieces=pieces), Script(pieces=pieces)]
    whole = post(shared, HELLO).json()["content"][0]["text"]
    events = transcript(post(shared, {**HELLO, "stream": True}).content)
    streamed = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert streamed == whole == "".join(pieces)


# the error table: (name, body or raw bytes, path, status, Anthropic error type)
BAD: list[tuple[str, Any, str, int, str]] = [
    (
        "no max_tokens",
        {"messages": HELLO["messages"]},
        "/v1/messages",
        400,
        "invalid_request_error",
    ),
    ("bad JSON", b"{", "/v1/messages", 400, "invalid_request_error"),
    (
        "an image block",
        {
            **HELLO,
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}
            ],
        },
        "/v1/messages",
        400,
        "invalid_request_error",
    ),
    ("unknown model", {**HELLO, "model": "nope"}, "/v1/messages", 404, "not_found_error"),
    (
        "count_tokens of an unknown model",
        {"model": "nope", "messages": HELLO["messages"]},
        "/v1/messages/count_tokens",
        404,
        "not_found_error",
    ),
    (
        "count_tokens without messages",
        {"model": "alpha"},
        "/v1/messages/count_tokens",
        400,
        "invalid_request_error",
    ),
    ("an unknown path under /v1/messages", HELLO, "/v1/messages/batches", 404, "not_found_error"),
    (
        "a body over 4 MiB",
        {**HELLO, "system": "x" * (4 * 1024 * 1024 + 1)},
        "/v1/messages",
        413,
        "request_too_large",
    ),
]


@pytest.mark.parametrize(
    "body,path,status,type_", [row[1:] for row in BAD], ids=[row[0] for row in BAD]
)
def test_bad_requests_get_anthropics_error_shape_and_status(
    shared: LiveServer, body: Any, path: str, status: int, type_: str
) -> None:
    before = len(shared.engine.jobs)
    if isinstance(body, bytes):
        with httpx.Client(base_url=shared.url, timeout=WAIT_S) as c:
            r = c.post(path, content=body, headers={**headers(shared), "content-type": "json"})
    else:
        r = post(shared, body, path)
    anthropic_error(r, status, type_)
    assert len(shared.engine.jobs) == before  # refused at the edge: the engine never saw it


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_wrong_x_api_key_is_a_401_authentication_error(shared: LiveServer, path: str) -> None:
    r = post(shared, HELLO, path, headers=headers(shared, key="sk-wrong"))
    anthropic_error(r, 401, "authentication_error")
    assert shared.key not in r.text


def test_an_engine_failure_is_a_500_api_error_without_internals(shared: LiveServer) -> None:
    shared.engine.scripts.append(Script(error_before_start=RuntimeError("secret internals")))
    r = post(shared, HELLO)
    assert "secret" not in anthropic_error(r, 500, "api_error")


def test_a_prompt_too_long_is_a_400_before_the_stream_starts(shared: LiveServer) -> None:
    shared.engine.scripts.append(Script(error_before_start=ContextLengthExceeded("too long")))
    anthropic_error(post(shared, {**HELLO, "stream": True}), 400, "invalid_request_error")


def test_a_prompt_too_long_reads_as_anthropics_so_agents_compact_their_history(
    shared: LiveServer,
) -> None:
    too_long = ContextLengthExceeded("long", param="messages", tokens=11234, context=8192)
    shared.engine.scripts.append(Script(error_before_start=too_long))
    message = anthropic_error(post(shared, {**HELLO, "stream": True}), 400, "invalid_request_error")
    assert message == "prompt is too long: 11234 tokens > 8191 maximum"


CLAUDE_CODE_HEADERS = {
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "context-management-2025-06-27,mid-conversation-system-2026-04-07,effort-2025-11-24",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
}
EPHEMERAL = {"cache_control": {"type": "ephemeral"}}


def claude_code_body() -> dict[str, Any]:
    """A turn shaped as Claude Code 2.1 sends it: system turn in messages, its extra fields."""
    return {
        "model": "alpha",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.191;"},
            {"type": "text", "text": "You are a Claude agent.", **EPHEMERAL},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What does notes.txt say?"}]},
            {"role": "system", "content": "Available agent types: claude, Explore."},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "1\thello"}
                    | EPHEMERAL
                ],
            },
        ],
        "tools": [{**WEATHER, **EPHEMERAL}],
        "metadata": {"user_id": '{"device_id": "d", "session_id": "s"}'},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }


def test_a_turn_as_claude_code_sends_it_is_answered_as_a_stream(shared: LiveServer) -> None:
    shared.engine.scripts.append(Script(pieces=("It says", " hello.")))
    before = len(shared.engine.jobs)
    r = post(
        shared,
        claude_code_body(),
        "/v1/messages?beta=true",
        headers={**headers(shared), **CLAUDE_CODE_HEADERS},
    )
    assert r.status_code == 200, r.text
    events = transcript(r.content)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == "It says hello."
    req = shared.engine.wait_jobs(before + 1)[-1].request
    assert [m.role for m in req.messages] == ["system", "user", "system", "assistant", "tool"]
    assert req.messages[2].content == "Available agent types: claude, Explore."


def test_the_sdk_sends_a_system_turn_inside_messages_through_extra_body(
    shared: LiveServer, sdk: anthropic.Anthropic
) -> None:
    shared.engine.scripts.append(Script(pieces=("Hi",)))
    before = len(shared.engine.jobs)
    message = sdk.beta.messages.create(
        model="alpha",
        max_tokens=8,
        messages=[{"role": "user", "content": "Hello"}],
        betas=["mid-conversation-system-2026-04-07"],
        extra_body={
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "system", "content": "Answer in French."},
            ],
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "low"},
        },
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hi"
    req = shared.engine.wait_jobs(before + 1)[-1].request
    assert req.messages == (Message("user", "Hello"), Message("system", "Answer in French."))


def test_an_error_after_the_stream_started_is_an_error_event(shared: LiveServer) -> None:
    error = ServiceUnavailable("The generation was stopped.")
    shared.engine.scripts.append(Script(pieces=("a", "b", "c"), error_after=2, error=error))
    r = post(shared, {**HELLO, "stream": True})
    assert r.status_code == 200
    events = transcript(r.content)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": error.message}},
    )
    assert "message_stop" not in [n for n, _ in events]


def test_nothing_loaded_and_no_model_named_is_a_503_overloaded_error(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", FakeEngine(loaded=None)) as s:
        anthropic_error(post(s, HELLO), 503, "overloaded_error")
        counted = post(s, {"messages": HELLO["messages"]}, "/v1/messages/count_tokens")
        anthropic_error(counted, 503, "overloaded_error")


def test_a_full_queue_is_a_429_rate_limit_error_with_retry_after_and_count_tokens_still_answers(
    tmp_path: Path,
) -> None:
    with engine_held(tmp_path / "home", post, [HELLO, HELLO], max_queue=1) as s:
        r = post(s, HELLO)
        assert "busy" in anthropic_error(r, 429, "rate_limit_error")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # count_tokens takes no turn: it answers while the engine is held and the line full
        counted = post(
            s,
            {"messages": HELLO["messages"], "tools": [WEATHER]},
            "/v1/messages/count_tokens",
        )
        assert counted.status_code == 200, counted.text
        assert counted.json() == {"input_tokens": 1 + 10}
        assert len(s.engine.jobs) == 1


def test_a_wait_past_the_queue_timeout_is_a_503_overloaded_error_with_retry_after(
    tmp_path: Path,
) -> None:
    with engine_held(tmp_path / "home", post, [HELLO], queue_timeout=0.5) as s:
        r = post(s, {**HELLO, "stream": True})
        anthropic_error(r, 503, "overloaded_error")
        assert 1 <= int(r.headers["retry-after"]) <= 60
    assert len(s.engine.jobs) == 1


def test_count_tokens_passes_the_named_model_and_the_same_request(shared: LiveServer) -> None:
    body = {
        "model": "fast",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "one two three"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "auto"},
    }
    jobs = len(shared.engine.jobs)
    r = post(shared, body, "/v1/messages/count_tokens")
    assert r.status_code == 200, r.text
    assert r.json() == {"input_tokens": 2 + 3 + 10}
    request, entry = shared.engine.counted[-1]
    assert entry is not None and entry.id == "alpha"  # tier "fast" resolved to its first model
    assert request.messages[0] == Message("system", "Be brief.")
    assert len(shared.engine.jobs) == jobs


# -- the official SDK --


def test_the_sdk_creates_a_message(shared: LiveServer, sdk: anthropic.Anthropic) -> None:
    shared.engine.scripts.append(Script(pieces=("Paris", ".")))
    message = sdk.messages.create(
        model="alpha", max_tokens=16, messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Paris."
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 2


def test_the_sdk_streams_a_message(shared: LiveServer, sdk: anthropic.Anthropic) -> None:
    shared.engine.scripts.append(Script(pieces=("Par", "is.")))
    with sdk.messages.stream(
        model="alpha", max_tokens=16, messages=[{"role": "user", "content": "Capital?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Paris."
    assert final.content[0].type == "text" and final.content[0].text == "Paris."
    assert final.stop_reason == "end_turn"


def test_the_sdk_counts_tokens(shared: LiveServer, sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(
        model="alpha", messages=[{"role": "user", "content": "one two"}], tools=[WEATHER]
    )
    assert counted.input_tokens == 2 + 10


def test_a_tool_use_round_trip_through_the_sdk_keeps_the_tool_use_id(
    shared: LiveServer, sdk: anthropic.Anthropic
) -> None:
    shared.engine.scripts += [
        Script(events=CALL, finish_reason="tool_calls"),
        Script(pieces=("Sunny.",)),
    ]
    ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Weather in Paris?"}]
    with sdk.messages.stream(
        model="alpha", max_tokens=64, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    result: anthropic.types.ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": use.id,
        "content": "18 C",
    }
    second = sdk.messages.create(
        model="alpha",
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
    )
    assert second.content[0].type == "text" and second.content[0].text == "Sunny."
    sent = shared.engine.jobs[-1].request.messages
    assert sent[-2].tool_calls == (ToolCall(use.id, "get_weather", '{"city":"Paris"}'),)
    assert sent[-1] == Message("tool", "18 C", tool_call_id=use.id, name="get_weather")


@pytest.mark.parametrize(
    "fields,error",
    [
        ({"model": "nope"}, anthropic.NotFoundError),
        ({"extra_body": {"temperature": 2}}, anthropic.BadRequestError),  # 0..1 in this dialect
    ],
)
def test_the_sdk_raises_its_own_error_classes(
    sdk: anthropic.Anthropic, fields: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        sdk.messages.create(
            **{"model": "alpha", "max_tokens": 8, "messages": HELLO["messages"], **fields}
        )


def test_the_sdk_with_a_wrong_key_raises_authentication_error(shared: LiveServer) -> None:
    with (
        anthropic.Anthropic(base_url=shared.url, api_key="sk-wrong", max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError),
    ):
        client.messages.create(model="alpha", max_tokens=8, messages=HELLO["messages"])


def test_the_sdks_beta_messages_that_claude_code_uses_work_too(
    shared: LiveServer, sdk: anthropic.Anthropic
) -> None:
    # Claude Code calls client.beta.messages: POST /v1/messages?beta=true with anthropic-beta.
    shared.engine.scripts.append(Script(pieces=("Hi",)))
    message = sdk.beta.messages.create(
        model="alpha",
        max_tokens=8,
        messages=[{"role": "user", "content": "Hello"}],
        betas=["interleaved-thinking-2025-05-14"],
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hi"
    counted = sdk.beta.messages.count_tokens(
        model="alpha", messages=[{"role": "user", "content": "one two"}]
    )
    assert counted.input_tokens == 2
