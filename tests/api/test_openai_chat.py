"""Tests for tholos_mlx.api.openai_chat: request validation and the chat.completion body."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest

from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.openai_chat import (
    completion_body,
    new_completion_id,
    parse_chat,
    usage_object,
)
from tholos_mlx.errors import InvalidRequest, TholosError, Unsupported
from tholos_mlx.events import Delta, Finished
from tholos_mlx.request import GenerationRequest, Message, Usage


def parse(raw: bytes) -> GenerationRequest:
    """The internal request a chat completion body becomes."""
    return parse_chat(raw).request


def ChatRequest(**fields: Any) -> GenerationRequest:  # noqa: N802 - reads like the old type
    """The expected internal request: no tools unless given."""
    return GenerationRequest(**fields)


ChatMessage = Message

USER = [{"role": "user", "content": "Hi"}]
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
INVALID = "invalid_request_error"


def body(**fields: Any) -> bytes:
    """A JSON body with a valid one-message conversation unless `messages` is given."""
    fields.setdefault("messages", USER)
    return orjson.dumps(fields)


def without_messages(**fields: Any) -> bytes:
    """A JSON body with no `messages` at all."""
    return orjson.dumps(fields)


def msg(role: Any = "user", content: Any = "Hi") -> bytes:
    """A body whose second message is the given one (so params read messages[1])."""
    system = {"role": "system", "content": "Be brief."}
    return body(messages=[system, {"role": role, "content": content}])


# (body, status, type, param, code)
BAD_INPUTS: list[tuple[bytes, int, str, str | None, str | None]] = [
    # the body itself
    (b"", 400, INVALID, None, None),
    (b"{not json", 400, INVALID, None, None),
    (b'{"messages": [}', 400, INVALID, None, None),
    (b"\xff\xfe", 400, INVALID, None, None),
    (b"[]", 400, INVALID, None, None),
    (b'"hello"', 400, INVALID, None, None),
    (b"null", 400, INVALID, None, None),
    # messages
    (without_messages(), 400, INVALID, "messages", None),
    (body(messages=None), 400, INVALID, "messages", None),
    (body(messages=[]), 400, INVALID, "messages", None),
    (body(messages="Hi"), 400, INVALID, "messages", None),
    (body(messages={"role": "user", "content": "Hi"}), 400, INVALID, "messages", None),
    (body(messages=[USER[0], "Hi"]), 400, INVALID, "messages[1]", None),
    (body(messages=[{"content": "Hi"}]), 400, INVALID, "messages[0].role", None),
    (msg(role="robot"), 400, INVALID, "messages[1].role", None),
    (msg(role="User"), 400, INVALID, "messages[1].role", None),
    (msg(role=3), 400, INVALID, "messages[1].role", None),
    (msg(role="tool"), 400, INVALID, "messages[1].tool_call_id", None),
    (msg(role="function"), 400, INVALID, "messages[1].role", "unsupported_parameter"),
    (msg(content=None), 400, INVALID, "messages[1].content", None),
    (body(messages=[{"role": "user"}]), 400, INVALID, "messages[0].content", None),
    (msg(role="system", content=None), 400, INVALID, "messages[1].content", None),
    (msg(content=42), 400, INVALID, "messages[1].content", None),
    (msg(content={"type": "text", "text": "Hi"}), 400, INVALID, "messages[1].content", None),
    (msg(content=[]), 400, INVALID, "messages[1].content", None),
    (msg(content=["Hi"]), 400, INVALID, "messages[1].content[0]", None),
    (msg(content=[{"text": "Hi"}]), 400, INVALID, "messages[1].content[0].type", None),
    (
        msg(content=[{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]),
        400,
        INVALID,
        "messages[1].content[1].type",
        "unsupported_parameter",
    ),
    (
        msg(content=[{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]),
        400,
        INVALID,
        "messages[1].content[0].type",
        "unsupported_parameter",
    ),
    (msg(content=[{"type": "text"}]), 400, INVALID, "messages[1].content[0].text", None),
    (msg(content=[{"type": "text", "text": 5}]), 400, INVALID, "messages[1].content[0].text", None),
    # model
    (body(model=7), 400, INVALID, "model", None),
    (body(model=["a"]), 400, INVALID, "model", None),
    # temperature and top_p
    (body(temperature=2.5), 400, INVALID, "temperature", None),
    (body(temperature=-0.1), 400, INVALID, "temperature", None),
    (body(temperature="0.7"), 400, INVALID, "temperature", None),
    (body(temperature=True), 400, INVALID, "temperature", None),
    (body(top_p=0), 400, INVALID, "top_p", None),
    (body(top_p=1.01), 400, INVALID, "top_p", None),
    (body(top_p=-1), 400, INVALID, "top_p", None),
    (body(top_p="1"), 400, INVALID, "top_p", None),
    # max_tokens / max_completion_tokens
    (body(max_tokens=0), 400, INVALID, "max_tokens", None),
    (body(max_tokens=-5), 400, INVALID, "max_tokens", None),
    (body(max_tokens=5.5), 400, INVALID, "max_tokens", None),
    (body(max_tokens=5.0), 400, INVALID, "max_tokens", None),
    (body(max_tokens=True), 400, INVALID, "max_tokens", None),
    (body(max_tokens="10"), 400, INVALID, "max_tokens", None),
    (body(max_completion_tokens=0), 400, INVALID, "max_completion_tokens", None),
    (body(max_completion_tokens=2.0), 400, INVALID, "max_completion_tokens", None),
    # stop
    (body(stop=["a", "b", "c", "d", "e"]), 400, INVALID, "stop", None),
    (body(stop=5), 400, INVALID, "stop", None),
    (body(stop=["a", 5]), 400, INVALID, "stop", None),
    (body(stop={"a": 1}), 400, INVALID, "stop", None),
    (body(stop="x" * 1001), 400, INVALID, "stop", None),
    (body(stop=["ok", "y" * 5000]), 400, INVALID, "stop", None),
    # stream and stream_options
    (body(stream="yes"), 400, INVALID, "stream", None),
    (body(stream=1), 400, INVALID, "stream", None),
    (body(stream=True, stream_options=True), 400, INVALID, "stream_options", None),
    (body(stream_options={"include_usage": True}), 400, INVALID, "stream_options", None),
    (
        body(stream=True, stream_options={"include_usage": "true"}),
        400,
        INVALID,
        "stream_options.include_usage",
        None,
    ),
    # seed
    (body(seed=1.5), 400, INVALID, "seed", None),
    (body(seed="42"), 400, INVALID, "seed", None),
    (body(seed=False), 400, INVALID, "seed", None),
    # fields that would change the answer's shape
    (body(n=2), 400, INVALID, "n", "unsupported_parameter"),
    (body(n=0), 400, INVALID, "n", "unsupported_parameter"),
    (body(n="2"), 400, INVALID, "n", None),
    (body(n=True), 400, INVALID, "n", None),
    (body(logprobs=True), 400, INVALID, "logprobs", "unsupported_parameter"),
    (body(logprobs="yes"), 400, INVALID, "logprobs", None),
    (body(top_logprobs=2), 400, INVALID, "top_logprobs", "unsupported_parameter"),
    (body(response_format={"type": "yaml"}), 400, INVALID, "response_format", None),
    (
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}),
        400,
        INVALID,
        "response_format",
        None,
    ),
    (body(response_format={"type": "json_schema"}), 400, INVALID, "response_format", None),
    *(
        (
            body(response_format={"type": "json_schema", "json_schema": spec}),
            400,
            INVALID,
            f"response_format.json_schema.{field}",
            None,
        )
        for spec, field in [
            ({"schema": {"type": "object"}}, "name"),  # OpenAI requires the name
            ({"name": "", "schema": {}}, "name"),
            ({"name": "a b!", "schema": {}}, "name"),
            ({"name": "x" * 65, "schema": {}}, "name"),
            ({"name": "x", "schema": {}, "strict": "yes"}, "strict"),
        ]
    ),
    (body(response_format="json"), 400, INVALID, "response_format", None),
    (body(tool_choice="required"), 400, INVALID, "tool_choice", None),
    (body(tool_choice="sometimes", tools=[FN]), 400, INVALID, "tool_choice", None),
    (
        body(tool_choice={"type": "function", "function": {"name": "g"}}, tools=[FN]),
        400,
        INVALID,
        "tool_choice",
        None,
    ),
    (body(tools={"type": "function"}), 400, INVALID, "tools", None),
    (body(tools=[{"type": "web_search"}]), 400, INVALID, "tools[0].type", None),
    (
        body(tools=[{"type": "function", "function": {}}]),
        400,
        INVALID,
        "tools[0].function.name",
        None,
    ),
    (
        body(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]
        ),
        400,
        INVALID,
        "tools[0].function.parameters",
        None,
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        400,
        INVALID,
        "tools[0].function.parameters",
        None,
    ),
    (body(tools=[FN, FN]), 400, INVALID, "tools", None),
    (
        body(
            messages=[
                *USER,
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
            ]
        ),
        400,
        INVALID,
        "messages[1].tool_calls[0].function",
        None,
    ),
    (body(parallel_tool_calls="no"), 400, INVALID, "parallel_tool_calls", None),
    (body(modalities=["text", "audio"]), 400, INVALID, "modalities", "unsupported_parameter"),
]


def _id(case: tuple[bytes, int, str, str | None, str | None]) -> str:
    return f"{case[3]}:{case[0][:60].decode('utf-8', 'replace')}"


@pytest.mark.parametrize(
    ("raw", "status", "type_", "param", "code"), BAD_INPUTS, ids=[_id(c) for c in BAD_INPUTS]
)
def test_bad_input_is_a_400_in_openai_shape_naming_the_param(
    raw: bytes, status: int, type_: str, param: str | None, code: str | None
) -> None:
    with pytest.raises(TholosError) as caught:
        parse_chat(raw)
    err = caught.value
    assert isinstance(err, InvalidRequest)
    assert (err.status, err.type, err.param, err.code) == (status, type_, param, code)
    error = err.body()["error"]
    assert isinstance(error, dict)
    assert list(error) == ["message", "type", "param", "code"]
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if param is not None:
        assert param.split("[")[0].split(".")[0] in error["message"]


def test_minimal_request_takes_openai_defaults() -> None:
    req = parse(body())
    assert req == ChatRequest(messages=(ChatMessage("user", "Hi"),))
    assert req.temperature == 1.0
    assert req.top_p == 1.0
    assert req.max_tokens is None
    assert req.model is None
    assert req.stop == ()
    assert not req.stream and not parse_chat(body()).include_usage
    assert req.seed is None


def test_every_supported_field_is_read() -> None:
    req = parse(
        body(
            model="fast",
            temperature=0,
            top_p=0.5,
            max_tokens=64,
            stop=["\n\n", "END"],
            stream=True,
            stream_options={"include_usage": True},
            seed=7,
        )
    )
    assert parse_chat(body(stream=True, stream_options={"include_usage": True})).include_usage
    assert req == ChatRequest(
        messages=(ChatMessage("user", "Hi"),),
        model="fast",
        temperature=0.0,
        top_p=0.5,
        max_tokens=64,
        stop=("\n\n", "END"),
        stream=True,
        seed=7,
    )
    assert isinstance(req.temperature, float)


def test_json_null_means_absent_for_every_optional_field() -> None:
    nulls = {
        name: None
        for name in (
            "model",
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "stream",
            "stream_options",
            "seed",
            "n",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tool_choice",
            "tools",
            "parallel_tool_calls",
        )
    }
    assert parse(body(**nulls)) == ChatRequest(messages=(ChatMessage("user", "Hi"),))
    chat = parse_chat(body(stream=True, stream_options={"include_usage": None}))
    assert chat.request.stream and not chat.include_usage


def test_empty_model_means_the_loaded_model() -> None:
    assert parse(body(model="")).model is None


def test_developer_role_is_read_as_system() -> None:
    req = parse(body(messages=[{"role": "developer", "content": "Rules"}, *USER]))
    assert req.messages[0] == ChatMessage("system", "Rules")


def test_text_parts_are_joined_without_separator() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    req = parse(body(messages=[{"role": "user", "content": parts}]))
    assert req.messages == (ChatMessage("user", "Hello, world"),)


def test_an_assistant_refusal_part_in_history_is_what_it_said_and_only_an_assistant_has_one() -> (
    None
):
    refused = [{"type": "refusal", "refusal": "I can't help with that."}]
    req = parse(body(messages=[*USER, {"role": "assistant", "content": refused}, *USER]))
    assert req.messages[1] == ChatMessage("assistant", "I can't help with that.")
    with pytest.raises(TholosError) as bad:
        parse(body(messages=[{"role": "user", "content": refused}]))
    assert bad.value.param == "messages[0].content[0].type"
    with pytest.raises(TholosError) as missing:
        parse(body(messages=[*USER, {"role": "assistant", "content": [{"type": "refusal"}]}]))
    assert missing.value.param == "messages[1].content[0].refusal"


def test_assistant_null_or_missing_content_is_empty_text() -> None:
    req = parse(
        body(
            messages=[
                *USER,
                {"role": "assistant", "content": None},
                {"role": "assistant"},
                {"role": "user", "content": ""},
            ]
        )
    )
    assert [m.content for m in req.messages] == ["Hi", "", "", ""]


def test_extra_message_fields_are_ignored() -> None:
    req = parse(body(messages=[{"role": "user", "content": "Hi", "name": "ann"}]))
    assert req.messages == (ChatMessage("user", "Hi"),)


def test_max_completion_tokens_is_read_as_max_tokens_and_wins_over_it() -> None:
    assert parse(body(max_completion_tokens=9)).max_tokens == 9
    assert parse(body(max_tokens=5, max_completion_tokens=9)).max_tokens == 9
    assert parse(body(max_tokens=5, max_completion_tokens=None)).max_tokens == 5


def test_stop_accepts_one_string_and_drops_empty_strings() -> None:
    assert parse(body(stop="###")).stop == ("###",)
    assert parse(body(stop="")).stop == ()
    assert parse(body(stop=["", "a", ""])).stop == ("a",)
    assert parse(body(stop=[])).stop == ()
    assert parse(body(stop=["a", "b", "c", "d"])).stop == ("a", "b", "c", "d")


def test_range_edges_are_accepted() -> None:
    assert parse(body(temperature=2)).temperature == 2.0
    assert parse(body(temperature=0.0)).temperature == 0.0
    assert parse(body(top_p=1)).top_p == 1.0
    assert parse(body(top_p=1e-9)).top_p == 1e-9
    assert parse(body(max_tokens=1)).max_tokens == 1
    assert parse(body(seed=-3)).seed == -3


def test_harmless_openai_fields_are_ignored() -> None:
    req = parse(
        body(
            user="u-1",
            metadata={"k": "v"},
            frequency_penalty=0.5,
            presence_penalty=0.1,
            store=False,
            service_tier="auto",
            logit_bias={"50256": -100},
            n=1,
            logprobs=False,
            response_format={"type": "text"},
            modalities=["text"],
            reasoning_effort="low",
            something_new={"x": 1},
        )
    )
    assert req == ChatRequest(messages=(ChatMessage("user", "Hi"),))


def test_unsupported_fields_raise_the_unsupported_subclass() -> None:
    with pytest.raises(Unsupported):
        parse(body(n=3))


def test_usage_dict_has_total_and_cached_tokens() -> None:
    assert usage_object(Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=6)) == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert usage_object(Usage(1, 2))["prompt_tokens_details"] == {"cached_tokens": 0}


def answer_of(text: str) -> Gathered:
    """A gathered answer of plain text."""
    answer = Gathered()
    answer.add(Delta(text))
    return answer


def test_completion_body_has_exactly_openai_shape() -> None:
    raw = completion_body(
        id="chatcmpl-x",
        created=1_700_000_000,
        model="smollm2-135m",
        answer=answer_of("Hello ✓"),
        finished=Finished("stop", Usage(3, 2)),
    )
    assert json.loads(raw) == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "smollm2-135m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello ✓", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": None,
    }


def test_completion_body_validates_against_the_openai_sdk_type() -> None:
    types = pytest.importorskip("openai.types.chat")
    raw = completion_body(
        id=new_completion_id(),
        created=1,
        model="m",
        answer=answer_of("t"),
        finished=Finished("length", Usage(1, 1)),
    )
    parsed = types.ChatCompletion.model_validate_json(raw)
    assert parsed.choices[0].message.content == "t"
    assert parsed.choices[0].finish_reason == "length"


@pytest.mark.parametrize("calls_only, content", [(False, ""), (True, None)])
def test_an_empty_answer_has_content_null_only_where_a_call_was_forced(
    calls_only: bool, content: str | None
) -> None:
    raw = completion_body(
        id="chatcmpl-x",
        created=1,
        model="m",
        answer=Gathered(),  # cut by max_tokens before anything, or before the call's name
        finished=Finished("length", Usage(3, 4)),
        calls_only=calls_only,
    )
    assert json.loads(raw)["choices"][0]["message"]["content"] == content


def test_completion_ids_look_like_openai_and_are_unique() -> None:
    ids = {new_completion_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", i) for i in ids)


def test_a_prediction_reaches_the_engine_as_text_from_a_string_or_text_parts() -> None:
    said = {"type": "content", "content": "def f():\n    return 1\n"}
    assert parse(body(prediction=said)).prediction == "def f():\n    return 1\n"
    parts = {
        "type": "content",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert parse(body(prediction=parts)).prediction == "ab"
    assert parse(body()).prediction is None


@pytest.mark.parametrize(
    ("prediction", "param"),
    [
        ("just text", "prediction"),
        ({"type": "text", "content": "x"}, "prediction.type"),
        ({"type": "content"}, "prediction.content"),
        ({"type": "content", "content": [{"type": "image_url"}]}, "prediction.content[0].type"),
        ({"type": "content", "content": 5}, "prediction.content"),
    ],
)
def test_a_malformed_prediction_is_a_400_naming_it(prediction: Any, param: str) -> None:
    with pytest.raises(TholosError) as caught:
        parse(body(prediction=prediction))
    assert caught.value.status == 400 and caught.value.param == param


def test_usage_reports_the_prediction_tokens_accepted_and_rejected() -> None:
    usage = Usage(10, 4, 0, accepted_prediction_tokens=3, rejected_prediction_tokens=5)
    assert usage_object(usage)["completion_tokens_details"] == {
        "accepted_prediction_tokens": 3,
        "rejected_prediction_tokens": 5,
    }
