"""Tests for the chat chunk encoder and SSE frames: every frame kind parsed back and compared to OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tholos_mlx.api.openai_chat import ChunkEncoder
from tholos_mlx.api.sse import DONE, KEEPALIVE
from tholos_mlx.api.sse import data as sse_data
from tholos_mlx.errors import ServerError, ServiceUnavailable, TholosError
from tholos_mlx.request import Usage


def error_frame(err: TholosError) -> bytes:
    """An error after streaming started, as the chat stream sends it."""
    return sse_data(err.body())


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
    """The JSON payload of one `data: ...\\n\\n` frame."""
    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert b"\n" not in frame[:-2]  # one line per event: SSE would split a raw newline
    return json.loads(frame[len(b"data: ") : -2].decode("utf-8"))


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


@pytest.mark.parametrize("include_usage", [False, True])
def test_content_fast_path_is_byte_identical_to_dumping_the_dict(include_usage: bool) -> None:
    frame = encoder(include_usage).content("tok")
    expected = chunk([choice({"content": "tok"})], include_usage)
    assert frame == b"data: " + orjson.dumps(expected) + b"\n\n"


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


def test_error_frame_carries_the_openai_error_object() -> None:
    err = ServiceUnavailable("engine stopped", param=None)
    assert parse(error_frame(err)) == {
        "error": {
            "message": "engine stopped",
            "type": "service_unavailable",
            "param": None,
            "code": "service_unavailable",
        }
    }
    assert parse(error_frame(ServerError("boom")))["error"]["type"] == "server_error"


def test_done_and_keepalive_are_sse_events() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert KEEPALIVE.startswith(b":") and KEEPALIVE.endswith(b"\n\n")


def test_concatenated_content_frames_rebuild_the_streamed_text() -> None:
    enc = encoder(False)
    pieces = ["Un", "ic", "ødé ", "🎉", "\n", "end"]
    text = "".join(parse(enc.content(p))["choices"][0]["delta"]["content"] for p in pieces)
    assert text == "".join(pieces)
