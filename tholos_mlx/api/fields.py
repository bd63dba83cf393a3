"""Shared request pieces every dialect reads: the body as a JSON object, JSON kinds for error
messages, tool names and their being distinct (the bodies are declared: see `validation`)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from pydantic import Field

from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import Tool

MAX_STOP_CHARS = 1000  # the stop matcher's work grows with the square of a stop's length
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NAME_RULE = "a string of 1 to 64 letters, digits, '_' or '-'"
OBJECT_SCHEMA = 'a JSON Schema of an object, such as {"type": "object", "properties": {...}}'

# Declared types every dialect uses (see `validation` for how their errors read).
NonEmpty = Annotated[str, Field(min_length=1, description="a non-empty string")]
ToolName = Annotated[str, Field(pattern=TOOL_NAME.pattern, description=NAME_RULE)]
ModelId = Annotated[
    str | None, Field(description="a string (a model id or tier from GET /v1/models)")
]
TopP = Annotated[
    float | None, Field(gt=0, le=1, description="a number greater than 0 and at most 1")
]


def load_object(body: bytes, example: str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that shows `example`."""
    try:
        data: object = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc}). Send a JSON object such as {example}."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The request body must be a JSON object; got {kind(data)}.")
    return data


def distinct_names(tools: list[Tool], what: str) -> tuple[Tool, ...]:
    """The tools, unless two share a name (a call could not say which it meant)."""
    names = {t.name for t in tools}
    if len(names) != len(tools):
        raise InvalidRequest(f"Each of 'tools' must have a different {what}.", param="tools")
    return tuple(tools)


def object_schema(schema: dict[str, Any] | None, param: str) -> dict[str, Any]:
    """A tool's input schema, which must describe an object; none means an object of nothing."""
    if schema is None:
        return {"type": "object", "properties": {}}
    if schema.get("type", "object") != "object":
        raise InvalidRequest(
            f"'{param}' must be {OBJECT_SCHEMA}; got type {schema.get('type')!r}.", param=param
        )
    return schema


def kind(value: object) -> str:
    """The JSON type of a value, for error messages ("a string", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
