"""Shared request pieces: the body as a JSON object, JSON kinds for messages, distinct tool names,
and the hand readers Responses still uses (chat and Messages are declared: see `validation`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

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


def is_int(value: object) -> TypeGuard[int]:
    """Whether a JSON value is an integer (bool is not, nor is 5.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether a JSON value is a number (bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(
    data: Mapping[str, object],
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    low_open: bool,
    param: str | None = None,
) -> float:
    """A number field within [low, high], or (low, high] when low_open."""
    param = param or name
    value = data.get(name)
    if value is None:
        return default
    if low_open:
        rule = f"'{param}' must be a number greater than {low:g} and at most {high:g}"
    else:
        rule = f"'{param}' must be a number from {low:g} to {high:g}"
    if not is_number(value):
        raise InvalidRequest(f"{rule}; got {kind(value)}.", param=param)
    result = float(value)
    if result > high or result < low or (low_open and result == low):
        raise InvalidRequest(f"{rule}; got {value!r}.", param=param)
    return result


def positive_int(data: Mapping[str, object], name: str, param: str | None = None) -> int | None:
    """An integer field of at least 1, or None when absent."""
    param = param or name
    value = data.get(name)
    if value is None:
        return None
    if not is_int(value):
        raise InvalidRequest(
            f"'{param}' must be an integer of at least 1; got {kind(value)}"
            + (f" ({value!r})." if isinstance(value, float) else "."),
            param=param,
        )
    if value < 1:
        raise InvalidRequest(
            f"'{param}' must be an integer of at least 1; got {value}.", param=param
        )
    return value


def boolean(
    data: Mapping[str, object], name: str, default: bool = False, param: str | None = None
) -> bool:
    """A boolean field; null or absent is the default."""
    param = param or name
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{param}' must be true or false; got {kind(value)}.", param=param)
    return value


def optional_int(data: Mapping[str, object], name: str) -> int | None:
    """Any integer (a seed), or None."""
    value = data.get(name)
    if value is None:
        return None
    if not is_int(value):
        raise InvalidRequest(f"'{name}' must be an integer; got {kind(value)}.", param=name)
    return value


def model_name(data: Mapping[str, object]) -> str | None:
    """`model`: an id or tier name, or None for the loaded model."""
    model = data.get("model")
    if model is None or model == "":
        return None
    if not isinstance(model, str):
        raise InvalidRequest(
            f"'model' must be a string (a model id or tier from GET /v1/models); "
            f"got {kind(model)}.",
            param="model",
        )
    return model


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
