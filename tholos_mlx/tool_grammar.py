"""The llguidance grammars of tool calls: forced calls and calls started by the model itself.

A call is written as `start {"name": NAME, "arguments": ARGS} end`, where `start` and `end` are
the model's tool-call markers, NAME one of the tools' names and ARGS valid against that tool's
`parameters`. This module only builds grammar text (Lark with `%json`); `constrain` compiles it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tholos_mlx.request import Tool

# Compact JSON: with llguidance's default free whitespace a small model spins on spaces and
# newlines until max_tokens (issue 11). `lenient: false` refuses unsupported keywords: a strict
# schema's; any other enforces the rest and reports them as warnings (issue 19).
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "lenient": False}
LENIENT_OPTIONS: dict[str, Any] = {**JSON_OPTIONS, "lenient": True}
# Enough for any real parallel use; stops a small model chaining calls until max_tokens.
MAX_PARALLEL_CALLS = 8

# A marker piece: ("text", "<tool_call>") or ("special", "1") for a special token's id.
Piece = tuple[str, str]
Tokenize = Callable[[str], list[Piece]]


@dataclass(frozen=True)
class ToolMarkers:
    """The text around one tool call, as the model's chat format writes it."""

    start: str = "<tool_call>"
    end: str = "</tool_call>"


def schema_for_grammar(schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The schema with our compile options in `x-guidance`, whatever the client put there."""
    options = JSON_OPTIONS if strict else LENIENT_OPTIONS
    return {**{k: v for k, v in schema.items() if k != "x-guidance"}, "x-guidance": options}


def arguments_schema(tool: Tool) -> dict[str, Any]:
    """A tool's `parameters` as the schema of its `arguments`: always a JSON object."""
    params = dict(tool.parameters)
    if "type" not in params:
        params["type"] = "object"
    return schema_for_grammar(params, tool.strict)


def literal(text: str) -> str:
    """A Lark string literal matching exactly `text`."""
    return json.dumps(text, ensure_ascii=False)


def marker_rule(pieces: Sequence[Piece]) -> str:
    """Lark items for a marker: special tokens by id (`<[ID]>`), text as a literal."""
    return " ".join(f"<[{v}]>" if kind == "special" else literal(v) for kind, v in pieces)


def body_rules(tools: Sequence[Tool]) -> str:
    """Rules `body` (the JSON of one call) and `tool_I` (one per tool: its name, its arguments)."""
    names = " | ".join(f"tool_{i}" for i in range(len(tools)))
    opening = literal('{"name":')
    lines = [f'body: "\\n"? {opening} ({names}) "}}" "\\n"?']
    for i, tool in enumerate(tools):
        head = json.dumps(tool.name, ensure_ascii=False) + ',"arguments":'
        text = tool.text_input
        if text is None:
            args = json.dumps(arguments_schema(tool), ensure_ascii=False)
            lines.append(f"tool_{i}: {literal(head)} %json {args}")
        else:  # the string's inside held to its own grammar, in a namespace of its own
            into = head + "{" + json.dumps(text.key, ensure_ascii=False) + ':"'
            out = literal('"}')
            lines.append(f"tool_{i}: {literal(into)} %lark {{\n{text.lark}\n}} {out}")
    return "\n".join(lines)


def _calls(first: str, parallel: bool) -> str:
    """`first` then, when parallel, up to MAX_PARALLEL_CALLS - 1 more calls, a newline apart."""
    if not parallel:
        return first
    return f'{first} ("\\n"? call){{0,{MAX_PARALLEL_CALLS - 1}}}'


def forced_grammar(
    tools: Sequence[Tool], start: Sequence[Piece], end: Sequence[Piece], parallel: bool
) -> str:
    """Lark text: the answer is one call (or, parallel, several) of these tools, then EOS."""
    return "\n".join(
        [
            "%llguidance {}",
            f"start: {_calls('call', parallel)}",
            f"call: {marker_rule(start)} body {marker_rule(end)}",
            body_rules(tools),
        ]
    )


def lazy_grammar(
    tools: Sequence[Tool], start: Sequence[Piece], end: Sequence[Piece], parallel: bool
) -> str:
    """Lark text: free text, or free text up to the start marker and from there calls, then EOS.

    A text marker is a lazy lexeme (`TEXT "<tool_call>"`, ending at the marker's first
    occurrence); a special-token marker cannot occur inside TEXT, so it needs no laziness.
    """
    lines = ["%llguidance {}", f"start: TEXT | {_calls('first_call', parallel)}"]
    lines.append(r"TEXT: /(.|\n)*/")
    head, rest = start[0], start[1:]
    if head[0] == "text":
        lines.append(f"trigger[lazy]: TEXT {literal(head[1])}")
        lines.append(f"first_call: trigger {marker_rule(rest)} body {marker_rule(end)}")
    else:
        lines.append(f"first_call: TEXT {marker_rule(start)} body {marker_rule(end)}")
    if parallel:
        lines.append(f"call: {marker_rule(start)} body {marker_rule(end)}")
    lines.append(body_rules(tools))
    return "\n".join(lines)


def answer_or_call_grammar(
    tools: Sequence[Tool],
    start: Sequence[Piece],
    end: Sequence[Piece],
    parallel: bool,
    answer: dict[str, Any],
) -> str:
    """Lark text: a JSON answer of that schema, or calls (no text before them), then EOS.

    `answer` is the schema with its compile options (`schema_check.format_schema`)."""
    return "\n".join(
        [
            "%llguidance {}",
            f"start: answer | {_calls('call', parallel)}",
            f"answer: %json {json.dumps(answer, ensure_ascii=False)}",
            f"call: {marker_rule(start)} body {marker_rule(end)}",
            body_rules(tools),
        ]
    )
