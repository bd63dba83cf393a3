"""OpenAI's request shapes that both OpenAI dialects read: `tool_choice` and `response_format`.

Chat completions nest them as OpenAI's chat API does; Responses reads the same shapes from its
own fields (`tool_choice`, `text.format`) and passes the param it names them by.
"""

from __future__ import annotations

import orjson

from tholos_mlx.api import fields as f
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import ResponseFormat, Tool, ToolChoice


def tool_choice(raw: object, tools: tuple[Tool, ...], param: str) -> ToolChoice:
    """`tool_choice`: "none", "auto", "required" or a named function (OpenAI's two shapes)."""
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if raw in ("none", "auto", "required"):
        choice = ToolChoice(raw)
    elif isinstance(raw, dict) and raw.get("type") == "function":
        inner = raw.get("function")
        name = inner.get("name") if isinstance(inner, dict) else raw.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(
                f'\'{param}\' must name the function: {{"type": "function", "function": {{"name": ...}}}}.',
                param=param,
            )
        choice = ToolChoice("function", name)
    else:
        raise InvalidRequest(
            f'\'{param}\' must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}; got '
            + (repr(raw) if isinstance(raw, str) else f.kind(raw))
            + ".",
            param=param,
        )
    if choice.mode in ("required", "function") and not tools:
        raise InvalidRequest(
            f"'{param}' asks for a tool call, but 'tools' is empty or missing.", param=param
        )
    if choice.mode == "function" and choice.name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"'{param}' names {choice.name!r}, which is not one of the functions in 'tools'.",
            param=param,
        )
    return choice


def response_format(raw: object, param: str) -> ResponseFormat:
    """`response_format`: text, json_object, or json_schema with its schema."""
    if raw is None:
        return ResponseFormat()
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f'\'{param}\' must be an object such as {{"type": "json_object"}}; got {f.kind(raw)}.',
            param=param,
        )
    kind = raw.get("type")
    if kind == "text":
        return ResponseFormat()
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                f"'{param}.json_schema' must be an object: "
                '{"name", "schema", "strict"}, the name required.',
                param=param,
            )
        name, strict = spec.get("name"), spec.get("strict")
        if not isinstance(name, str) or not f.TOOL_NAME.match(name):  # as OpenAI requires
            raise InvalidRequest(
                f"'{param}.json_schema.name' is required: 1 to 64 letters, digits, '_' or '-'.",
                param=f"{param}.json_schema.name",
            )
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest(
                f"'{param}.json_schema.strict' must be true or false; got {f.kind(strict)}.",
                param=f"{param}.json_schema.strict",
            )
        return json_schema_format(spec.get("schema"), name, strict, param)
    raise InvalidRequest(
        f'\'{param}.type\' must be "text", "json_object" or "json_schema"; got '
        f"{orjson.dumps(kind).decode()}.",
        param=param,
    )


def json_schema_format(schema: object, name: object, strict: object, param: str) -> ResponseFormat:
    """A json_schema format from its parts (chat nests them, Responses does not)."""
    if schema is None:
        schema = {}
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"'{param}' schema must be a JSON Schema object; got {f.kind(schema)}.", param=param
        )
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"'{param}' name must be a string; got {f.kind(name)}.", param=param)
    return ResponseFormat(
        "json_schema", schema=schema, name=name, strict=strict is True, path=param
    )
