"""Responses `custom` tools: offered as a function of one string, called as custom_tool_call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes import LiveServer, Script, live_server
from tholos_mlx.api.responses_custom import arguments, input_so_far
from tholos_mlx.api.responses_request import parse_responses
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.events import ToolCallDelta, ToolCallStart
from tholos_mlx.lark_quote import quote_lark
from tholos_mlx.request import ToolCall, ToolChoice
from tholos_mlx.schema_check import WARNINGS_HEADER, check

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
PATCH_GRAMMAR = 'start: "*** Begin Patch\\n" LINE* "*** End Patch"\nLINE: /[^*\\n][^\\n]*\\n/'
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_GRAMMAR},
}
ZIP = {
    "type": "custom",
    "name": "zip_code",
    "description": "A French postcode.",
    "format": {"type": "grammar", "syntax": "regex", "definition": "75[0-9]{3}"},
}
FREE = {"type": "custom", "name": "note", "description": "Free text.", "format": {"type": "text"}}
PATCH = '*** Begin Patch\nhello "world" \\ é\n*** End Patch'
PATCH_EVENTS = (
    ToolCallStart(0, "call_p1", "apply_patch"),
    ToolCallDelta(0, arguments(PATCH)[:17]),
    ToolCallDelta(0, arguments(PATCH)[17:30]),
    ToolCallDelta(0, arguments(PATCH)[30:]),
)


def parse(**fields: Any) -> Any:
    return parse_responses(json.dumps({"input": "Hi", **fields}).encode())


def test_a_custom_tool_is_offered_as_a_function_of_one_string_input() -> None:
    parsed = parse(tools=[FREE, ZIP, APPLY_PATCH])
    free, zip_code, patch = parsed.generation().tools
    assert free.parameters == {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
        "additionalProperties": False,
    }
    assert zip_code.parameters["properties"]["input"]["pattern"] == "^(?:75[0-9]{3})$"
    assert PATCH_GRAMMAR in (patch.description or "")
    assert (free.schema_path, patch.schema_path) == ("tools[0].format", "tools[2].format")
    assert set(parsed.echo.custom) == {"note", "zip_code", "apply_patch"}
    assert (free.text_input, zip_code.text_input) == (None, None)
    assert patch.text_input is not None and patch.text_input.key == "input"
    assert patch.text_input.lark == quote_lark(PATCH_GRAMMAR)  # held, not only shown
    assert check(parsed.generation()) == ()  # the regex is a pattern llguidance enforces


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        (
            {"type": "grammar", "syntax": "lark", "definition": "start: (("},
            "tools[0].format.definition",
        ),
        (
            {"type": "grammar", "syntax": "regex", "definition": "(a)\\1"},
            "tools[0].format.definition",
        ),
        ({"type": "grammar", "syntax": "ebnf", "definition": "x"}, "tools[0].format.syntax"),
        ({"type": "grammar", "syntax": "lark"}, "tools[0].format.definition"),
        ({"type": "json"}, "tools[0].format"),
    ],
)
def test_a_custom_tools_bad_format_is_a_400_naming_it(fmt: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(tools=[{"type": "custom", "name": "x", "format": fmt}])
    assert caught.value.param == param


def test_a_custom_call_and_its_output_go_back_into_the_conversation() -> None:
    parsed = parse(
        tools=[APPLY_PATCH],
        tool_choice={"type": "custom", "name": "apply_patch"},
        input=[
            {"role": "user", "content": "Patch it."},
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": PATCH},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done."},
        ],
    )
    req = parsed.generation()
    assert req.tool_choice == ToolChoice("function", "apply_patch")
    assert req.messages[1].tool_calls == (ToolCall("c1", "apply_patch", arguments(PATCH)),)
    assert (req.messages[2].role, req.messages[2].content, req.messages[2].name) == (
        "tool",
        "Done.",
        "apply_patch",
    )


def test_the_input_grows_one_whole_character_at_a_time_from_any_cut_of_the_json() -> None:
    for text in (PATCH, "😀\\u", 'a"b', ""):
        for raw in (
            arguments(text),
            arguments(text).replace("é", "\\u00e9").replace("😀", "\\ud83d\\ude00"),
        ):
            seen = ""
            for i in range(len(raw) + 1):
                now = input_so_far(raw[:i])
                assert now.startswith(seen), (raw[:i], seen, now)
                seen = now
            assert seen == text


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "home") as s:
        yield s


def test_a_custom_call_is_a_custom_tool_call_item_whole_or_streamed(server: LiveServer) -> None:
    server.engine.scripts = [Script(events=PATCH_EVENTS, finish_reason="tool_calls")] * 2
    body = {"model": "alpha", "input": "Patch it.", "tools": [APPLY_PATCH, FREE]}
    with server.client() as c:
        r = c.post("/v1/responses", json=body)
        assert r.status_code == 200, r.text
        assert WARNINGS_HEADER not in r.headers  # the lark grammar is enforced: nothing to say
        (item,) = r.json()["output"]
        assert {k: item[k] for k in ("type", "call_id", "name", "input", "status")} == {
            "type": "custom_tool_call",
            "call_id": "call_p1",
            "name": "apply_patch",
            "input": PATCH,
            "status": "completed",
        }
        response = Response.model_validate(r.json())
        assert response.tools[0].type == "custom"  # echoed as it was sent
        text = c.post("/v1/responses", json={**body, "stream": True}).text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    for event in events:
        EVENT.validate_python(event)
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 1 and "".join(deltas) == PATCH
    (done,) = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    assert done["input"] == PATCH
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert added[0]["type"] == "custom_tool_call" and added[0]["input"] == ""


def test_the_sdk_round_trips_a_custom_call_through_previous_response_id(
    server: LiveServer,
) -> None:
    server.engine.scripts = [Script(events=PATCH_EVENTS, finish_reason="tool_calls"), Script()]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as sdk:
        first = sdk.responses.create(model="alpha", input="Patch it.", tools=[APPLY_PATCH])  # type: ignore[list-item]
        (call,) = first.output
        assert call.type == "custom_tool_call" and call.input == PATCH
        second = sdk.responses.create(
            model="alpha",
            previous_response_id=first.id,
            tools=[APPLY_PATCH],  # type: ignore[list-item]
            input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done."}],
        )
    assert second.output_text == "Hello, world!"
    messages = server.engine.wait_jobs(2)[1].request.messages
    assert messages[-2].tool_calls[0].arguments == arguments(PATCH)
    assert (messages[-1].role, messages[-1].content) == ("tool", "Done.")


def test_a_custom_tool_needs_the_key(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/v1/responses", json={"input": "Hi", "tools": [FREE]})
    assert r.status_code == 401
