"""Tests for tholos_mlx.api.responses_request: a /v1/responses body to the internal request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tholos_mlx.api.responses_request import ResponsesRequest, parse_responses, wire_param
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import Message, ResponseFormat, Tool, ToolCall, ToolChoice

FN = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def parse(**fields: Any) -> ResponsesRequest:
    """Parse a body with the given fields; `input` is "Hi" unless given."""
    fields.setdefault("input", "Hi")
    return parse_responses(orjson.dumps(fields))


def refused(fields: dict[str, Any]) -> InvalidRequest:
    """The 400 a body with these fields gets."""
    with pytest.raises(InvalidRequest) as info:
        parse_responses(orjson.dumps(fields))
    return info.value


# -- the request --


def test_a_string_input_is_one_user_message_and_instructions_the_system_turn() -> None:
    parsed = parse(input="What is 2+2?", instructions="Answer in digits.")
    assert parsed.generation().messages == (
        Message("system", "Answer in digits."),
        Message("user", "What is 2+2?"),
    )


def test_a_follow_up_puts_instructions_then_the_stored_conversation_then_the_input() -> None:
    history = (Message("user", "Hi"), Message("assistant", "Hello!"))
    parsed = parse(input="Again", instructions="Be brief.")
    assert parsed.generation(history).messages == (
        Message("system", "Be brief."),
        *history,
        Message("user", "Again"),
    )
    assert parse(input="Again").generation(history).messages == (*history, Message("user", "Again"))


def test_input_items_become_the_conversation_with_calls_merged_into_their_turn() -> None:
    items = [
        {"role": "developer", "content": "Use tools."},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Weather?"}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "noon"}],
        },
    ]
    assert parse(input=items).generation().messages == (
        Message("system", "Use tools."),
        Message("user", "Weather?"),
        Message(
            "assistant",
            "Checking.",
            tool_calls=(
                ToolCall("call_1", "get_weather", "{}"),
                ToolCall("call_2", "get_time", "{}"),
            ),
        ),
        Message("tool", "sunny", tool_call_id="call_1", name="get_weather"),
        Message("tool", "noon", tool_call_id="call_2", name="get_time"),
    )


def test_a_call_with_no_text_before_it_is_an_assistant_turn_of_its_own() -> None:
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert parse(input=[{"role": "user", "content": "x"}, call]).input[1] == Message(
        "assistant", "", tool_calls=(ToolCall("c", "f", "{}"),)
    )


def test_a_tool_result_finds_its_function_name_in_the_stored_conversation() -> None:
    history = (Message("assistant", "", tool_calls=(ToolCall("call_9", "lookup", "{}"),)),)
    result = {"type": "function_call_output", "call_id": "call_9", "output": "42"}
    assert parse(input=[result]).generation(history).messages[-1].name == "lookup"


def test_hosted_tools_are_left_out_and_a_namespaces_functions_offered_as_functions() -> None:
    spawn = {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [spawn],
    }
    hosted = [
        {"type": "web_search", "external_web_access": False},
        {"type": "web_search_preview"},
        {"type": "web_search_2025_08_26"},
        {"type": "file_search", "vector_store_ids": ["v"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "computer_use_preview", "display_width": 1, "display_height": 1},
        {"type": "image_generation"},
        {"type": "mcp", "server_label": "x"},
        {"type": "local_shell"},
    ]
    parsed = parse(tools=[FN, *hosted, namespace])
    req = parsed.generation()
    assert [t.name for t in req.tools] == ["get_weather", "spawn_agent"]
    assert req.tools[1].schema_path == "tools[10].tools[0].parameters"
    assert parsed.echo.namespaces == {"spawn_agent": "multi_agent_v1"}
    assert req.tool_choice == ToolChoice("auto")
    forced = parse(tools=[namespace], tool_choice={"type": "function", "name": "spawn_agent"})
    assert forced.generation().tool_choice == ToolChoice("function", "spawn_agent")
    assert parse(tools=hosted).generation().tools == ()


def test_what_codex_sends_beside_its_input_is_accepted_and_changes_nothing() -> None:
    plain = parse(tools=[FN], store=False).generation()
    codex = parse(
        tools=[FN],
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "medium", "summary": "auto"},
        prompt_cache_key="01a24a44-3d00-7143-b924-d5a6aabb88e2",
        client_metadata={"x-codex-installation-id": "c7be3a8f"},
        text={"verbosity": "low"},
        tool_choice="auto",
        parallel_tool_calls=True,
    ).generation()
    assert codex == plain


def test_the_settings_reach_the_internal_request() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    parsed = parse(
        model="fast",
        max_output_tokens=3,
        temperature=0,
        top_p=0.5,
        stream=True,
        tools=[{**FN, "description": "Weather now", "strict": True}],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
        store=False,
        metadata={"k": "v"},
        seed=7,
    )
    req = parsed.generation()
    assert (req.model, req.max_tokens, req.temperature, req.top_p, req.stream, req.seed) == (
        "fast",
        3,
        0.0,
        0.5,
        True,
        7,
    )
    assert req.tools == (Tool("get_weather", "Weather now", {"type": "object"}, strict=True),)
    assert req.tool_choice == ToolChoice("function", "get_weather")
    assert req.parallel_tool_calls is False
    assert req.response_format == ResponseFormat("json_schema", schema, "a", strict=True)
    assert parsed.echo.store is False and parsed.echo.metadata == {"k": "v"}


def test_defaults_are_openais() -> None:
    parsed = parse()
    req = parsed.generation()
    assert (req.temperature, req.top_p, req.max_tokens, req.stream) == (1.0, 1.0, None, False)
    # "auto" as OpenAI echoes it, tools or not; without tools nothing can be called anyway
    assert req.tool_choice == ToolChoice("auto") and req.response_format == ResponseFormat()
    assert parsed.echo.store is True and parsed.echo.previous_response_id is None
    assert parse(tools=[FN]).generation().tool_choice == ToolChoice("auto")
    assert parse(text={"format": {"type": "json_object"}}).echo.text_format.kind == "json_object"


def test_unknown_fields_that_do_not_change_the_answer_are_ignored() -> None:
    parse(
        user="u",
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
        truncation="disabled",
        service_tier="auto",
        prompt_cache_key="k",
        stream_options={"include_obfuscation": False},
        background=False,
        top_logprobs=0,
    )


BAD: list[tuple[dict[str, Any], str | None, str | None]] = [
    # (body, param, code)
    ({}, "input", None),
    ({"input": {}}, "input", None),
    ({"input": []}, "input", None),
    ({"input": ["Hi"]}, "input[0]", None),
    ({"input": [{"content": "Hi"}]}, "input[0]", None),
    ({"input": [{"role": "tool", "content": "Hi"}]}, "input[0].role", None),
    ({"input": [{"role": "user"}]}, "input[0].content", None),
    ({"input": [{"role": "user", "content": []}]}, "input[0].content", None),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input[0].content[0].type",
        "unsupported_parameter",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
        None,
    ),
    (
        {"input": [{"type": "item_reference", "id": "msg_1"}]},
        "input[0].type",
        "unsupported_parameter",
    ),
    (
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
        None,
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        "input[0].arguments",
        None,
    ),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", None),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output", None),
    ({"input": "Hi", "instructions": ["x"]}, "instructions", None),
    ({"input": "Hi", "tools": [{"type": "bogus"}]}, "tools[0].type", None),
    ({"input": "Hi", "tools": [FN, {"type": "custom_thing", "name": "x"}]}, "tools[1].type", None),
    ({"input": "Hi", "tools": [{"type": "namespace", "tools": [FN]}]}, "tools[0].name", None),
    (
        {"input": "Hi", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "x"}]}]},
        "tools[0].tools[0].type",
        None,
    ),
    (
        {
            "input": "Hi",
            "tools": [{"type": "namespace", "name": "n", "tools": [{**FN, "name": 1}]}],
        },
        "tools[0].tools[0].name",
        None,
    ),
    (
        {"input": "Hi", "tools": [FN, {"type": "namespace", "name": "n", "tools": [FN]}]},
        "tools",
        None,
    ),
    (
        {
            "input": "Hi",
            "tools": [FN, {"type": "web_search"}],
            "tool_choice": {"type": "web_search"},
        },
        "tool_choice",
        None,
    ),
    ({"input": "Hi", "tools": ["get_weather"]}, "tools[0].type", None),
    ({"input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name", None),
    (
        {"input": "Hi", "tools": [{**FN, "parameters": {"type": "array"}}]},
        "tools[0].parameters",
        None,
    ),
    ({"input": "Hi", "tools": [FN, FN]}, "tools", None),
    ({"input": "Hi", "tool_choice": "required"}, "tool_choice", None),
    ({"input": "Hi", "tools": [FN], "tool_choice": "any"}, "tool_choice", None),
    (
        {"input": "Hi", "tools": [FN], "tool_choice": {"type": "web_search_preview"}},
        "tool_choice",
        None,
    ),
    (
        {"input": "Hi", "tools": [FN], "tool_choice": {"type": "function", "name": "x"}},
        "tool_choice",
        None,
    ),
    ({"input": "Hi", "text": "json"}, "text", None),
    ({"input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format", None),
    (
        {"input": "Hi", "text": {"format": {"type": "json_schema", "schema": {}}}},
        "text.format.name",
        None,
    ),
    (
        {"input": "Hi", "text": {"format": {"type": "json_schema", "name": "a"}}},
        "text.format.schema",
        None,
    ),
    (
        {
            "input": "Hi",
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {}, "strict": 1}},
        },
        "text.format.strict",
        None,
    ),
    ({"input": "Hi", "temperature": 3}, "temperature", None),
    ({"input": "Hi", "top_p": 0}, "top_p", None),
    ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens", None),
    ({"input": "Hi", "store": "yes"}, "store", None),
    ({"input": "Hi", "stream": 1}, "stream", None),
    ({"input": "Hi", "previous_response_id": 5}, "previous_response_id", None),
    ({"input": "Hi", "metadata": {"k": 1}}, "metadata", None),
    ({"input": "Hi", "model": 3}, "model", None),
    ({"input": [{"type": 5, "role": "user", "content": "Hi"}]}, "input[0]", None),
    ({"input": [{"role": "user", "content": [5]}]}, "input[0].content[0]", None),
    ({"input": [{"role": "user", "content": [{"text": "Hi"}]}]}, "input[0].content[0]", None),
    (
        {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}]},
        "input[0].output[0].type",
        "unsupported_parameter",
    ),
    (
        {"input": [{"type": "custom_tool_call", "call_id": "c", "name": "f"}]},
        "input[0].input",
        None,
    ),
    (
        {"input": "Hi", "tools": [{"type": "namespace", "name": "n", "tools": ["f"]}]},
        "tools[0].tools[0].type",
        None,
    ),
    (
        {"input": "Hi", "tools": [{"type": "custom", "name": "x", "format": {"type": "xml"}}]},
        "tools[0].format",
        None,
    ),
    (
        {
            "input": "Hi",
            "tools": [{"type": "custom", "name": "x"}],
            "tool_choice": {"type": "custom", "name": "y"},
        },
        "tool_choice",
        None,
    ),
    ({"input": "Hi", "tool_choice": {"type": "allowed_tools"}}, "tool_choice", None),
    ({"input": "Hi", "text": {"format": {}}}, "text.format", None),
    (
        {"input": "Hi", "text": {"format": {"type": "json_schema", "name": "a", "schema": 5}}},
        "text.format.schema",
        None,
    ),
    ({"input": "Hi", "background": True}, "background", "unsupported_parameter"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"input": "Hi", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"input": "Hi", "top_logprobs": 2}, "top_logprobs", "unsupported_parameter"),
]


@pytest.mark.parametrize(
    "body,param,code", BAD, ids=[str(b[1]) + f"-{i}" for i, b in enumerate(BAD)]
)
def test_bad_requests_get_a_400_naming_the_param(
    body: dict[str, Any], param: str | None, code: str | None
) -> None:
    err = refused(body)
    assert (err.status, err.param, err.code) == (400, param, code)
    assert err.message and "Traceback" not in err.message


def test_forcing_a_hosted_tool_is_refused_by_its_type() -> None:
    hosted = [{"type": "web_search_preview"}]
    err = refused({"input": "Hi", "tools": hosted, "tool_choice": {"type": "web_search_preview"}})
    assert "'web_search_preview'" in err.message and "cannot run" in err.message


def test_an_unknown_part_or_item_type_is_named_in_the_refusal() -> None:
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}
    assert "'input_image'" in refused({"input": [image]}).message
    assert "'item_reference'" in refused({"input": [{"type": "item_reference"}]}).message
    assert "'xml'" in refused({"input": "Hi", "text": {"format": {"type": "xml"}}}).message


def test_input_items_are_made_only_for_a_response_that_is_stored() -> None:
    req = parse(input=[{"role": "user", "content": "Hi", "id": "msg_mine"}], store=False)
    assert "items" not in vars(req)  # Codex's store: false turn pays for no ids
    assert req.items[0]["id"] == "msg_mine" and req.items is req.items  # made once


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_responses(b"{nope")


def test_the_engines_field_names_are_told_as_this_api_names_them() -> None:
    assert wire_param("response_format") == "text.format"
    assert wire_param("response_format.json_schema.schema") == "text.format.schema"
    assert wire_param("messages") == "input"
    assert wire_param("messages[3].content") == "input"
    assert wire_param("tools[1].function.parameters") == "tools[1].parameters"
    assert wire_param("tool_choice") == "tool_choice"
    assert wire_param(None) is None


def test_the_memory_guards_max_tokens_is_named_as_this_api_names_it() -> None:
    from tholos_mlx.api.responses_request import wire_param

    assert wire_param("max_tokens") == "max_output_tokens"
