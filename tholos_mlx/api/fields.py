"""Shared request pieces: the body as a JSON object, JSON kinds for messages, distinct tool names,
and the readers Responses' items and tools still use (chat and Messages are declared: see `validation`)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import Tool

MAX_STOP_CHARS = 1000  # the stop matcher's work grows with the square of a stop's length
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


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


def array(raw: object, param: str, what: str) -> list[Any]:
    """An optional array field: [] when absent, else the list; a 400 naming `what` it must hold."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest(f"'{param}' must be an array of {what}; got {kind(raw)}.", param=param)
    return raw


def distinct_names(tools: list[Tool], what: str) -> tuple[Tool, ...]:
    """The tools, unless two share a name (a call could not say which it meant)."""
    names = {t.name for t in tools}
    if len(names) != len(tools):
        raise InvalidRequest(f"Each of 'tools' must have a different {what}.", param="tools")
    return tuple(tools)


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


def tool(
    name: object,
    description: object,
    parameters: object,
    strict: object,
    where: str,
    schema_field: str = "parameters",
) -> Tool:
    """A function tool from its parts, whatever the dialect's wrapping; `where` names its path."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidRequest(
            f"'{where}.name' must be a string of 1 to 64 letters, digits, '_' or '-'; got "
            + (repr(name) if isinstance(name, str) else kind(name))
            + ".",
            param=f"{where}.name",
        )
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(
            f"'{where}.description' must be a string; got {kind(description)}.",
            param=f"{where}.description",
        )
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise InvalidRequest(
            f"'{where}.{schema_field}' must be a JSON Schema of an object, such as "
            '{"type": "object", "properties": {...}}; got '
            + (
                f"type {parameters.get('type')!r}"
                if isinstance(parameters, dict)
                else kind(parameters)
            )
            + ".",
            param=f"{where}.{schema_field}",
        )
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(
            f"'{where}.strict' must be true or false; got {kind(strict)}.", param=f"{where}.strict"
        )
    return Tool(
        name=name,
        description=description,
        parameters=parameters,
        strict=bool(strict),
        schema_path=f"{where}.{schema_field}",
    )
