"""JSON schemas as llguidance sees them, checked before a request queues: no tokenizer, no MLX.

A schema llguidance cannot compile (a backreference in a pattern) or a `$ref` outside the
schema is the client's error, answered at once with a 400 naming the field, even while another
request holds the engine (CONTRACT: refusals answer at once). A keyword llguidance cannot
enforce (`propertyNames`, which zod records produce) is a 400 only in a `strict: true` schema;
otherwise the rest is enforced and `check` returns a warning for the
`x-tholos-schema-warnings` header. A strict object schema must be closed
(`additionalProperties: false`), as OpenAI requires. The engine still compiles the grammar with
the model's tokenizer (`constrain.py`), from the same text.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import llguidance
import orjson

from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import GenerationRequest, ResponseFormat, Tool
from tholos_mlx.tool_grammar import arguments_schema, schema_for_grammar

ANY_OBJECT: dict[str, Any] = {"type": "object"}
WARNINGS_HEADER = "x-tholos-schema-warnings"
# Keywords whose values are data, not subschemas: a "$ref" key inside them is no reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords holding one subschema, or a map or list of them (for the closed-object rule).
_ONE_SCHEMA = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_REASON_CHARS = 400
_CHECKED_SIZE = 256  # schemas whose verdict is remembered: an agent sends the same tools a turn
# canonical schema (with its options) -> (whether it cannot compile, llguidance's messages)
_checked: OrderedDict[str, tuple[bool, tuple[str, ...]]] = OrderedDict()


def check(req: GenerationRequest) -> tuple[str, ...]:
    """InvalidRequest if the response_format or a tool's parameters cannot constrain; else
    the warnings about keywords of non-strict schemas that are not enforced."""
    warnings: list[str] = []
    fmt = req.response_format
    if fmt.kind != "text":
        warnings += _check_schema(format_schema(fmt), fmt.path, fmt.path)
        if fmt.strict and fmt.schema is not None:
            what = f"response_format {fmt.name or 'response'!r}"
            _refuse_open_objects(fmt.schema, what, fmt.path)
    if req.tool_choice.mode != "none":
        for i, tool in enumerate(req.tools):
            param, label = tool_param(i, tool)
            warnings += _check_schema(arguments_schema(tool), param, label)
            if tool.strict:
                what = f"function {tool.name!r}"
                _refuse_open_objects(tool.parameters, what, param, "invalid_function_parameters")
    return tuple(warnings)


def warnings_header(warnings: tuple[str, ...]) -> dict[str, str]:
    """The response header that lists what was not enforced; {} when everything is."""
    if not warnings:
        return {}
    text = "; ".join(dict.fromkeys(warnings))  # once each, in order
    return {WARNINGS_HEADER: text.encode("ascii", "backslashreplace").decode()}


def _check_schema(schema: dict[str, Any], param: str, label: str) -> list[str]:
    refuse_external_refs(schema, param, label)
    key = canonical(schema)
    verdict = _checked.get(key)
    if verdict is None:
        try:
            failed, said = llguidance.LLMatcher.validate_grammar_with_warnings(json_grammar(schema))
            verdict = failed, tuple(one_line(m) for m in said)
        except ValueError as e:  # grammar_from_json_schema refuses what is not a JSON object
            verdict = True, (one_line(str(e)),)
        _checked[key] = verdict
        while len(_checked) > _CHECKED_SIZE:
            _checked.popitem(last=False)
    else:
        _checked.move_to_end(key)
    failed, messages = verdict
    if failed:
        raise InvalidRequest(
            f"{label}: the JSON schema cannot constrain generation: {'; '.join(messages)}",
            param=param,
        )
    return [f"{param}: {m} (not enforced)" for m in messages]


def _refuse_open_objects(
    schema: dict[str, Any], what: str, param: str, code: str | None = None
) -> None:
    """InvalidRequest, in OpenAI's words, for a strict schema with an object left open."""
    context = open_object(schema)
    if context is not None:
        raise InvalidRequest(
            f"Invalid schema for {what}: In context={context!r}, 'additionalProperties' is "
            "required to be supplied and to be false.",
            param=param,
            code=code,
        )


def open_object(schema: Any, context: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first object subschema without `additionalProperties: false`, if any."""
    if not isinstance(schema, dict):
        return None
    is_object = schema.get("type") == "object" or ("type" not in schema and "properties" in schema)
    if is_object and schema.get("additionalProperties") is not False:
        return context
    found: tuple[str, ...] | None = None
    for key in _ONE_SCHEMA:
        found = found or open_object(schema.get(key), (*context, key))
    for key in _SCHEMA_MAPS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, value in sub.items():
                found = found or open_object(value, (*context, key, name))
    for key in _SCHEMA_LISTS:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, value in enumerate(sub):
                found = found or open_object(value, (*context, key, str(i)))
    return found


def format_schema(fmt: ResponseFormat) -> dict[str, Any]:
    """The schema a JSON response_format asks for (its own, or any object for json_object),
    with its compile options."""
    schema = fmt.schema if fmt.kind == "json_schema" and fmt.schema is not None else ANY_OBJECT
    return schema_for_grammar(schema, fmt.strict or fmt.kind != "json_schema")


def tool_param(i: int, tool: Tool) -> tuple[str, str]:
    """The param of a tool's parameters in errors, and how a message names it."""
    param = tool.schema_path or f"tools[{i}].function.parameters"
    return param, f"{param} (function {tool.name!r})"


def refuse_external_refs(schema: dict[str, Any], param: str, label: str) -> None:
    """InvalidRequest for a `$ref` outside the schema: nothing is ever fetched."""
    outside = external_ref(schema)
    if outside is not None:
        raise InvalidRequest(
            f"{label}: `$ref` {outside!r} points outside the schema; only references inside "
            'it ("#/...") are supported, nothing is fetched.',
            param=param,
        )


def json_grammar(schema: dict[str, Any]) -> str:
    """llguidance's grammar of a schema that carries its options (`schema_for_grammar`)."""
    return llguidance.LLMatcher.grammar_from_json_schema(schema)


def canonical(schema: dict[str, Any]) -> str:
    """The cache key of a schema: its JSON with key order kept (llguidance emits properties in
    schema order, so two orders are two grammars)."""
    try:
        return orjson.dumps(schema).decode()
    except TypeError:  # an integer past 64 bits: orjson refuses it, json does not
        return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def external_ref(schema: Any) -> str | None:
    """The first `$ref` of the schema that points outside it (a URL, another file), if any."""
    ids = {v for v in _walk(schema, "$id") if isinstance(v, str)}
    for ref in _walk(schema, "$ref"):
        if not isinstance(ref, str):
            continue
        base = ref.split("#", 1)[0]
        if base and base not in ids:
            return ref
    return None


def _walk(node: Any, key: str) -> Iterator[Any]:
    """Every value of `key` in the schema's objects, skipping data (const, enum, ...)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            elif k not in _DATA_KEYWORDS:
                yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def one_line(reason: str) -> str:
    """llguidance's reason on one line, bounded (regex errors come with a caret diagram)."""
    text = " ".join(reason.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"
