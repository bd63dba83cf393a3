"""Tests for tholos_mlx.api.anthropic_request: a Messages body to the one internal request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tholos_mlx.api.anthropic_request import parse_messages
from tholos_mlx.errors import InvalidRequest, Unsupported
from tholos_mlx.request import (
    GenerationRequest,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)

USER = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def body(**fields: Any) -> bytes:
    """A JSON body with max_tokens and a one-message conversation unless given."""
    fields.setdefault("max_tokens", 64)
    fields.setdefault("messages", USER)
    return orjson.dumps({k: v for k, v in fields.items() if v is not ...})


def parse(raw: bytes) -> GenerationRequest:
    return parse_messages(raw).request


def test_a_minimal_request_takes_anthropics_defaults() -> None:
    assert parse(body()) == GenerationRequest(messages=(Message("user", "Hi"),), max_tokens=64)


def test_every_supported_field_is_read() -> None:
    req = parse(
        body(
            model="alpha",
            system="Be brief.",
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["\n\n", "END"],
            stream=True,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        )
    )
    assert req == GenerationRequest(
        messages=(Message("system", "Be brief."), Message("user", "Hi")),
        model="alpha",
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        max_tokens=64,
        stop=("\n\n", "END"),
        stream=True,
        tools=(
            Tool("get_weather", "The weather in a city.", WEATHER["input_schema"]),  # type: ignore[arg-type]
        ),
        tool_choice=ToolChoice("function", "get_weather"),
        parallel_tool_calls=False,
    )


def test_system_text_blocks_are_joined_and_an_empty_system_adds_no_turn() -> None:
    blocks = [
        {"type": "text", "text": "You are a bot.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."},
    ]
    assert parse(body(system=blocks)).messages[0] == Message(
        "system", "You are a bot.\n\nBe brief."
    )
    assert parse(body(system="")).messages == (Message("user", "Hi"),)


def test_a_tool_round_trip_becomes_assistant_tool_calls_and_named_tool_turns() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should look.", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18 C"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert parse(body(messages=messages, tools=[WEATHER])).messages == (
        Message("user", "Weather in Paris?"),
        Message(
            "assistant",
            "Let me check.",
            tool_calls=(ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),),
        ),
        Message("tool", "18 C", tool_call_id="toolu_1", name="get_weather"),
        Message("user", "And tomorrow?"),
    )


def test_a_tool_result_may_be_a_string_empty_or_marked_as_an_error() -> None:
    def result(**fields: Any) -> Message:
        block = {"type": "tool_result", "tool_use_id": "toolu_9", **fields}
        return parse(body(messages=[{"role": "user", "content": [block]}])).messages[0]

    assert result(content="42") == Message("tool", "42", tool_call_id="toolu_9")
    assert result() == Message("tool", "", tool_call_id="toolu_9")
    assert result(content="no such city", is_error=True).content == "Error: no such city"


def test_a_final_empty_assistant_turn_is_dropped_but_a_prefill_is_kept() -> None:
    empty = [*USER, {"role": "assistant", "content": ""}]
    assert parse(body(messages=empty)).messages == (Message("user", "Hi"),)
    assert not parse(body(messages=empty)).continue_final
    prefill = [*USER, {"role": "assistant", "content": [{"type": "text", "text": "Sure"}]}]
    req = parse(body(messages=prefill))
    assert req.messages[-1] == Message("assistant", "Sure")
    assert req.continue_final  # the model goes on from "Sure", as Anthropic's does


def test_only_a_conversation_ending_in_assistant_text_is_continued() -> None:
    assert not parse(body()).continue_final
    earlier = [*USER, {"role": "assistant", "content": "Hello"}, *USER]
    assert not parse(body(messages=earlier)).continue_final


def test_a_prefill_ending_in_whitespace_is_a_400_as_anthropic_answers() -> None:
    with pytest.raises(InvalidRequest) as bad:
        parse(body(messages=[*USER, {"role": "assistant", "content": "Sure, "}]))
    assert "trailing whitespace" in bad.value.message


@pytest.mark.parametrize(
    "fields",
    [
        {
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
        },
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
    ],
)
def test_a_prefill_with_a_grammar_that_writes_the_whole_answer_is_a_400(
    fields: dict[str, Any],
) -> None:
    begun = [*USER, {"role": "assistant", "content": "{"}]
    with pytest.raises(InvalidRequest) as bad:
        parse(body(messages=begun, **fields))
    assert "begun answer" in bad.value.message


def test_tool_choice_modes_map_to_the_internal_modes() -> None:
    def choice(tc: Any) -> tuple[ToolChoice, bool]:
        req = parse(body(tools=[WEATHER], tool_choice=tc))
        return req.tool_choice, req.parallel_tool_calls

    assert choice(...) == (ToolChoice("auto"), True)
    assert choice({"type": "auto"}) == (ToolChoice("auto"), True)
    assert choice({"type": "any"}) == (ToolChoice("required"), True)
    assert choice({"type": "none"}) == (ToolChoice("none"), True)
    assert choice({"type": "any", "disable_parallel_tool_use": True}) == (
        ToolChoice("required"),
        False,
    )
    assert parse(body()).tool_choice == ToolChoice("none")


def test_output_config_format_is_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "schema": schema}
    expected = ResponseFormat("json_schema", schema=schema)
    assert parse(body(output_config={"format": fmt, "effort": "low"})).response_format == expected
    assert parse(body(output_format=fmt)).response_format == expected


def test_thinking_blocks_are_asked_for_only_by_an_enabled_thinking_field() -> None:
    assert parse_messages(body(thinking={"type": "enabled", "budget_tokens": 1024})).thinking
    assert parse_messages(body(thinking={"type": "adaptive"})).thinking
    assert not parse_messages(body(thinking={"type": "disabled"})).thinking
    assert not parse_messages(body()).thinking


def test_a_system_turn_inside_messages_is_system_text_at_that_point() -> None:
    messages = [
        *USER,
        {"role": "system", "content": "Agents: claude, Explore."},
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "One"},
                {"type": "text", "text": "Two", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": ""},
        {"role": "assistant", "content": "Hello"},
        *USER,
    ]
    req = parse(body(system="Be brief.", messages=messages))
    assert req.messages == (
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("system", "Agents: claude, Explore."),
        Message("system", "One\n\nTwo"),
        Message("assistant", "Hello"),
        Message("user", "Hi"),
    )


def test_what_claude_code_adds_is_accepted_and_changes_nothing() -> None:
    plain = parse(body(system=[{"type": "text", "text": "Be brief."}], tools=[WEATHER]))
    cached = {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    claude_code = parse(
        body(
            system=[{"type": "text", "text": "Be brief.", **cached}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", **cached}]}],
            tools=[{**WEATHER, **cached}],
            thinking={"type": "adaptive"},
            context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            output_config={"effort": "high"},
            metadata={"user_id": '{"device_id": "d", "session_id": "s"}'},
        )
    )
    assert claude_code == plain


def test_anthropic_only_fields_are_accepted_and_ignored() -> None:
    plain = parse(body())
    assert (
        parse(
            body(
                metadata={"user_id": "u1"},
                service_tier="auto",
                container=None,
                context_management={"edits": []},
            )
        )
        == plain
    )


def test_count_tokens_needs_no_max_tokens_and_never_streams() -> None:
    req = parse_messages(body(max_tokens=..., stream=True), count_only=True).request
    assert req.max_tokens is None and req.stream is False


def test_range_edges_are_accepted() -> None:
    assert parse(body(temperature=0)).temperature == 0.0
    assert parse(body(temperature=1)).temperature == 1.0
    assert parse(body(top_p=1)).top_p == 1.0
    assert parse(body(top_k=0)).top_k == 0


# (fields, the param the message must name, Unsupported?)
BAD: list[tuple[dict[str, Any], str, bool]] = [
    ({"max_tokens": ...}, "max_tokens", False),
    ({"max_tokens": 0}, "max_tokens", False),
    ({"max_tokens": "10"}, "max_tokens", False),
    ({"messages": ...}, "messages", False),
    ({"messages": []}, "messages", False),
    ({"messages": "Hi"}, "messages", False),
    ({"messages": ["Hi"]}, "messages[0]", False),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", False),
    ({"messages": [*USER, {"role": "system", "content": 5}]}, "messages[1].content", False),
    (
        {"messages": [*USER, {"role": "system", "content": [{"type": "image", "source": {}}]}]},
        "messages[1].content[0]",
        True,
    ),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", False),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content", False),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "content[0].type", False),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
        False,
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    ],
                }
            ]
        },
        "messages[0].content[0]",
        True,
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        "messages[0].content[0]",
        True,
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}]},
        "messages[0].content[0]",
        False,
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
        "tool_use_id",
        False,
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "image", "source": {}}],
                        }
                    ],
                }
            ]
        },
        "content[0].content[0]",
        True,
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}],
                }
            ]
        },
        "content[0].input",
        False,
    ),
    ({"system": 5}, "system", False),
    ({"system": [{"type": "image"}]}, "system[0]", True),
    ({"temperature": 1.5}, "temperature", False),
    ({"top_p": 0}, "top_p", False),
    ({"top_k": -1}, "top_k", False),
    ({"top_k": 2.5}, "top_k", False),
    ({"stop_sequences": [1]}, "stop_sequences", False),
    ({"stream": "yes"}, "stream", False),
    ({"tools": {}}, "tools", False),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema", False),
    ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools[0].name", False),
    ({"tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "input_schema", False),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type", True),
    ({"tools": [WEATHER, WEATHER]}, "tools", False),
    ({"tool_choice": {"type": "any"}}, "tool_choice", False),
    ({"tool_choice": "auto"}, "tool_choice", False),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name", False),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "x"}}, "tool_choice.name", False),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "auto", "disable_parallel_tool_use": 1}},
        "tool_choice.disable_parallel_tool_use",
        False,
    ),
    ({"output_config": {"format": {"type": "text"}}}, "output_config.format", False),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema", False),
    ({"model": 5}, "model", False),
]


@pytest.mark.parametrize("fields,param,unsupported", BAD, ids=[p for _, p, _ in BAD])
def test_bad_input_is_a_400_whose_message_names_the_field(
    fields: dict[str, Any], param: str, unsupported: bool
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(body(**fields))
    err = caught.value
    assert err.status == 400
    assert err.param is not None and param in err.param
    assert f"'{err.param}'" in err.message  # the message names the field as the client wrote it
    assert isinstance(err, Unsupported) == unsupported


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"x"'])
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw)
    assert caught.value.status == 400
