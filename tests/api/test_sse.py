"""SSE frames and the chat chunk encoder, checked against literal bytes and an SSE parser of the test's own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tholos_mlx.api import sse
from tholos_mlx.api.openai_chat import ChatStream, ChunkEncoder
from tholos_mlx.errors import ServerError, ServiceUnavailable
from tholos_mlx.events import Started
from tholos_mlx.request import Usage


def sse_events(stream: bytes) -> list[tuple[str, str]]:
    """(event name, data) of each event, read as the SSE spec reads a stream (comments skipped)."""
    out: list[tuple[str, str]] = []
    name, data = "message", list[str]()
    for line in stream.decode("utf-8").split("\n"):  # the server ends lines with LF only
        if line == "":
            if data:
                out.append((name, "\n".join(data)))
            name, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return out


ID = "chatcmpl-abc123"
CREATED = 1_700_000_000
MODEL = 'smollm2-135m "quoted" é'
TEXTS = [
    "Hello",
    "",
    " wörld ✓ 🎉",
    'quote " backslash \\ newline \n tab \t',
    "\u0000\u001f\u2028",
]


def parse(frame: bytes) -> Any:
    """The JSON payload of a frame holding exactly one unnamed event of one data line."""
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 2  # a raw newline would split it
    [(name, data)] = sse_events(frame)
    assert name == "message"
    return json.loads(data)


def chunk(choices: list[dict[str, Any]], include_usage: bool, usage: Any = None) -> dict[str, Any]:
    """The chunk OpenAI sends, as a dict."""
    body: dict[str, Any] = {
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": choices,
    }
    if include_usage:
        body["usage"] = usage
    return body


def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One streamed choice, as a dict."""
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def encoder(include_usage: bool) -> ChunkEncoder:
    """An encoder for the test's completion."""
    return ChunkEncoder(id=ID, created=CREATED, model=MODEL, include_usage=include_usage)


@pytest.mark.parametrize("include_usage", [False, True])
def test_role_chunk_has_openai_shape(include_usage: bool) -> None:
    frame = encoder(include_usage).role()
    expected = chunk([choice({"role": "assistant", "content": ""})], include_usage)
    assert parse(frame) == expected


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_content_chunk_has_openai_shape(include_usage: bool, text: str) -> None:
    frame = encoder(include_usage).content(text)
    expected = chunk([choice({"content": text})], include_usage)
    assert parse(frame) == expected


def test_a_content_chunk_is_exactly_these_bytes_with_its_text_escaped() -> None:
    enc = ChunkEncoder(id=ID, created=CREATED, model='m "q" é', include_usage=True)
    assert enc.content('a"\\\n\u2028🎉') == (
        b'data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"m \\"q\\" \xc3\xa9","system_fingerprint":null,"choices":[{"index":0,'
        b'"delta":{"content":"a\\"\\\\\\n\xe2\x80\xa8\xf0\x9f\x8e\x89"},"logprobs":null,'
        b'"finish_reason":null}],"usage":null}\n\n'
    )
    no_usage = ChunkEncoder(id=ID, created=CREATED, model="m", include_usage=False)
    assert no_usage.content("tok") == (
        b'data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"tok"},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("reason", ["stop", "length"])
def test_finish_chunk_has_empty_delta_and_reason(include_usage: bool, reason: str) -> None:
    frame = encoder(include_usage).finish(reason)
    assert parse(frame) == chunk([choice({}, reason)], include_usage)


def test_usage_chunk_has_no_choices_and_the_usage() -> None:
    frame = encoder(True).usage(Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=3))
    expected = chunk(
        [],
        True,
        {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    )
    assert parse(frame) == expected


def test_all_frames_keep_the_same_key_order_as_openai() -> None:
    enc = encoder(True)
    frames = [enc.role(), enc.content("x"), enc.finish("stop"), enc.usage(Usage(1, 1))]
    for frame in frames:
        assert list(parse(frame)) == [
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "choices",
            "usage",
        ]


def test_chunks_validate_against_the_openai_sdk_types() -> None:
    types = pytest.importorskip("openai.types.chat")
    enc = encoder(True)
    for frame in [enc.role(), enc.content("hi"), enc.finish("length"), enc.usage(Usage(3, 4))]:
        parsed = types.ChatCompletionChunk.model_validate(parse(frame))
        assert parsed.id == ID
    last = types.ChatCompletionChunk.model_validate(parse(enc.usage(Usage(3, 4))))
    assert last.usage.total_tokens == 7


def error_frame(exc: BaseException) -> bytes:
    """What a chat stream sends when the engine fails after streaming started."""
    stream = ChatStream(Started(model=MODEL, prompt_tokens=3, cached_tokens=0), include_usage=True)
    out, done = stream.render([exc])
    assert done
    return out


def test_error_frame_carries_the_openai_error_object_and_no_done() -> None:
    err = ServiceUnavailable("engine stopped", param=None)
    assert parse(error_frame(err)) == {  # one event: parse() refuses a frame with [DONE] after it
        "error": {
            "message": "engine stopped",
            "type": "service_unavailable",
            "param": None,
            "code": "service_unavailable",
        }
    }
    assert parse(error_frame(ServerError("boom")))["error"]["type"] == "server_error"
    internal = parse(error_frame(RuntimeError("secret path /Users/me")))["error"]
    assert internal["type"] == "server_error" and "secret" not in internal["message"]


def test_done_and_keepalive_are_exactly_what_sse_clients_expect() -> None:
    assert sse.DONE == b"data: [DONE]\n\n"
    assert sse_events(sse.DONE) == [("message", "[DONE]")]
    assert sse.KEEPALIVE == b": keepalive\n\n"
    assert sse_events(sse.KEEPALIVE) == []  # a comment: no event at all


def test_data_and_named_event_frames_are_exactly_these_bytes() -> None:
    assert sse.data({"a": "é\n", "b": [1, None]}) == b'data: {"a":"\xc3\xa9\\n","b":[1,null]}\n\n'
    assert sse.event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_a_stream_of_frames_reads_back_as_its_events_in_order() -> None:
    stream = sse.event("message_start", {"n": 1}) + sse.KEEPALIVE + sse.data({"n": 2}) + sse.DONE
    assert sse_events(stream) == [
        ("message_start", '{"n":1}'),
        ("message", '{"n":2}'),
        ("message", "[DONE]"),
    ]


def test_concatenated_content_frames_rebuild_the_streamed_text() -> None:
    enc = encoder(False)
    pieces = ["Un", "ic", "ødé ", "🎉", "\n", "end"]
    text = "".join(parse(enc.content(p))["choices"][0]["delta"]["content"] for p in pieces)
    assert text == "".join(pieces)
