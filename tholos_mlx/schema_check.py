"""JSON schemas as llguidance sees them, checked before a request queues: no tokenizer, no MLX.

A schema llguidance cannot compile (an unsupported keyword, a backreference in a pattern) or a
`$ref` outside the schema is the client's error, answered at once with a 400 naming the field,
even while another request holds the engine (CONTRACT: refusals answer at once). The engine
still compiles the grammar with the model's tokenizer (`constrain.py`), from the same text.
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
from tholos_mlx.tool_grammar import JSON_OPTIONS, arguments_schema, schema_for_grammar

ANY_OBJECT: dict[str, Any] = {"type": "object"}
# Keywords whose values are data, not subschemas: a "$ref" key inside them is no reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_REASON_CHARS = 400
_CHECKED_SIZE = 256  # schemas whose verdict is remembered: an agent sends the same tools a turn
_checked: OrderedDict[str, str] = OrderedDict()  # canonical schema -> "" or llguidance's reason


def check(req: GenerationRequest) -> None:
    """InvalidRequest if the request's response_format or a tool's parameters cannot constrain."""
    fmt = req.response_format
    if fmt.kind != "text":
        _check_schema(format_schema(fmt), "response_format", "response_format")
    if req.tool_choice.mode != "none":
        for i, tool in enumerate(req.tools):
            _check_schema(arguments_schema(tool), *tool_param(i, tool))


def _check_schema(schema: dict[str, Any], param: str, label: str) -> None:
    refuse_external_refs(schema, param, label)
    key = canonical(schema)
    reason = _checked.get(key)
    if reason is None:
        try:
            reason = one_line(llguidance.LLMatcher.validate_grammar(json_grammar(schema)))
        except ValueError as e:  # grammar_from_json_schema refuses what is not a JSON object
            reason = one_line(str(e))
        _checked[key] = reason
        while len(_checked) > _CHECKED_SIZE:
            _checked.popitem(last=False)
    else:
        _checked.move_to_end(key)
    if reason:
        raise InvalidRequest(
            f"{label}: the JSON schema cannot constrain generation: {reason}", param=param
        )


def format_schema(fmt: ResponseFormat) -> dict[str, Any]:
    """The schema a JSON response_format asks for: its own, or any object for json_object."""
    return fmt.schema if fmt.kind == "json_schema" and fmt.schema is not None else ANY_OBJECT


def tool_param(i: int, tool: Tool) -> tuple[str, str]:
    """The param of a tool's parameters in errors, and how a message names it."""
    param = f"tools[{i}].function.parameters"
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
    """llguidance's grammar of a JSON schema, compact, our options over the client's."""
    return llguidance.LLMatcher.grammar_from_json_schema(
        schema_for_grammar(schema),
        overrides=JSON_OPTIONS,  # type: ignore[arg-type]
    )


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
