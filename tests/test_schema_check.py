"""Schemas checked before a request queues: what the SDKs send is enforced, refused or reported."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk_schemas import SDK_SCHEMAS, ZOD_RECORD, closed
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import GenerationRequest, Message, ResponseFormat, Tool, ToolChoice
from tholos_mlx.schema_check import WARNINGS_HEADER, check, open_object, warnings_header

HI = (Message("user", "Hi"),)


def with_tool(schema: dict[str, Any], strict: bool = False, path: str = "") -> GenerationRequest:
    tool = Tool("f", None, schema, strict=strict, schema_path=path)
    return GenerationRequest(HI, tools=(tool,), tool_choice=ToolChoice("auto"))


def with_format(
    schema: dict[str, Any], strict: bool = False, path: str = "response_format"
) -> GenerationRequest:
    fmt = ResponseFormat("json_schema", schema, "answer", strict=strict, path=path)
    return GenerationRequest(HI, response_format=fmt)


@pytest.mark.parametrize("name", list(SDK_SCHEMAS))
def test_every_sdk_schema_is_accepted_when_not_strict_and_its_gaps_are_reported(
    name: str,
) -> None:
    schema, unenforced = SDK_SCHEMAS[name]
    for req in (with_tool(schema, path="tools[0].parameters"), with_format(schema)):
        warnings = check(req)
        assert len(warnings) == len(unenforced)
        for keyword, warning in zip(sorted(unenforced), warnings):
            assert keyword in warning and "not enforced" in warning
    assert check(with_tool(schema, path="tools[0].parameters")) == tuple(
        f'tools[0].parameters: Unimplemented keys: ["{k}"] (not enforced)' for k in unenforced
    )


@pytest.mark.parametrize("name", [n for n, (s, u) in SDK_SCHEMAS.items() if closed(s) and not u])
def test_a_closed_sdk_schema_is_accepted_strict_without_warnings(name: str) -> None:
    schema, _ = SDK_SCHEMAS[name]
    assert check(with_tool(schema, strict=True)) == ()
    assert check(with_format(schema, strict=True)) == ()


def test_a_strict_zod_record_is_a_400_naming_the_keyword_it_cannot_enforce() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check(with_tool(ZOD_RECORD, strict=True, path="tools[2].input_schema"))
    assert caught.value.param == "tools[2].input_schema"
    assert "propertyNames" in caught.value.message
    assert caught.value.message.startswith("tools[2].input_schema (function 'f'): ")


def test_a_strict_schema_with_an_open_object_is_a_400_in_openais_words() -> None:
    nested = {
        "type": "object",
        "properties": {"where": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "additionalProperties": False,
    }
    with pytest.raises(InvalidRequest) as caught:
        check(with_tool(nested, strict=True, path="tools[0].parameters"))
    assert caught.value.message == (
        "Invalid schema for function 'f': In context=('properties', 'where'), "
        "'additionalProperties' is required to be supplied and to be false."
    )
    assert (caught.value.param, caught.value.code) == (
        "tools[0].parameters",
        "invalid_function_parameters",
    )
    with pytest.raises(InvalidRequest) as caught:
        check(with_format({"type": "object"}, strict=True, path="text.format"))
    assert caught.value.message.startswith("Invalid schema for response_format 'answer': ")
    assert "context=()" in caught.value.message and caught.value.param == "text.format"
    assert check(with_tool(nested)) == ()  # not strict: an open object is the client's choice


def test_open_objects_are_found_wherever_subschemas_live() -> None:
    shut = {"type": "object", "additionalProperties": False}
    assert open_object(shut) is None
    assert open_object({"properties": {}}) == ()  # an object by its properties
    assert open_object({**shut, "properties": {"a": {"type": "object"}}}) == ("properties", "a")
    assert open_object({"type": "array", "items": {"type": "object"}}) == ("items",)
    assert open_object({"anyOf": [shut, {"type": "object"}]}) == ("anyOf", "1")
    assert open_object({**shut, "$defs": {"P": {"type": "object"}}}) == ("$defs", "P")
    assert open_object({"type": "object", "additionalProperties": {}}) == ()
    assert open_object({**shut, "properties": {"e": {"enum": [{"type": "object"}]}}}) is None


def test_a_tools_schema_is_not_checked_when_no_call_can_happen() -> None:
    req = with_tool(ZOD_RECORD, strict=True)
    none = GenerationRequest(HI, tools=req.tools, tool_choice=ToolChoice("none"))
    assert check(none) == ()


def test_the_warnings_header_lists_each_warning_once_in_ascii() -> None:
    assert warnings_header(()) == {}
    header = warnings_header(("a: x", "b: é", "a: x"))
    assert header == {WARNINGS_HEADER: "a: x; b: \\xe9"}
