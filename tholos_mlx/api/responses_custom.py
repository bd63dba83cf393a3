"""Responses `custom` tools: free-text input, optionally held to a grammar (issue 19).

The model calls every tool the same way, with JSON arguments; a custom tool is offered as a
function of one string, `input`, and its call is answered as a `custom_tool_call` item carrying
that string. A `regex` grammar constrains the string through llguidance (a JSON-schema
`pattern`); a `lark` grammar is shown to the model and, rewritten to match its sentences as
written inside a JSON string (lark_quote), holds the string's inside when the model calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import llguidance
import orjson
from pydantic import Discriminator, Field, Tag
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api.fields import ToolName
from tholos_mlx.api.validation import type_of
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.lark_quote import LarkQuoteError, quote_lark
from tholos_mlx.request import TextInput, Tool

INPUT_KEY = "input"
_HEAD = '{"' + INPUT_KEY + '":"'  # how compact JSON arguments of a custom call begin
_HEX = frozenset("0123456789abcdefABCDEF")
FORMAT_RULE = (
    '{"type": "text"} or {"type": "grammar", "syntax": "lark" | "regex", "definition": ...}'
)


class TextFormat(TypedDict):
    """Free text: the input is any string."""

    type: Literal["text"]


class GrammarFormat(TypedDict):
    """The input must follow a grammar: Lark (shown, not enforced) or a regex (enforced)."""

    type: Literal["grammar"]
    syntax: Annotated[Literal["lark", "regex"], Field(description="'lark' or 'regex'")]
    definition: Annotated[str, Field(min_length=1, description="the grammar's text")]


_FORMATS = {"text": "<text>", "grammar": "<grammar>"}


def _format_kind(raw: Any) -> str | None:
    return _FORMATS.get(type_of(raw) or "")


Format = Annotated[
    Annotated[TextFormat, Tag("<text>")] | Annotated[GrammarFormat, Tag("<grammar>")],
    Discriminator(_format_kind, custom_error_type="wrong_type", custom_error_message="a format"),
]


class CustomSpec(TypedDict):
    """`{"type": "custom", "name", "description", "format"}`: a tool of free-text input."""

    type: Literal["custom"]
    name: ToolName
    description: NotRequired[Annotated[str | None, Field(description="a string")]]
    format: NotRequired[Annotated[Format | None, Field(description=FORMAT_RULE)]]


@dataclass(frozen=True)
class CustomTool:
    """One custom tool: the function offered in its place, and its wire form."""

    tool: Tool
    wire: dict[str, Any]


def custom_tool(spec: CustomSpec, where: str, wire: dict[str, Any] | None = None) -> CustomTool:
    """The function offered for a declared custom tool (`wire`: as sent, for the answer's echo,
    when it holds more than was declared); a grammar that does not compile is a 400 naming it."""
    fmt = spec.get("format")
    schema: dict[str, Any] = {"type": "string"}
    description = spec.get("description")
    text_input = None
    if fmt is not None and fmt["type"] == "grammar":
        syntax, definition = fmt["syntax"], fmt["definition"]
        param = f"{where}.format.definition"
        _compile(syntax, definition, param)
        if syntax == "regex":
            schema["pattern"] = f"^(?:{definition})$"
        else:
            text_input = TextInput(INPUT_KEY, _quoted(definition, param))
            note = f"Its input must follow this Lark grammar:\n{definition}"
            description = f"{description}\n\n{note}" if description is not None else note
    parameters = {
        "type": "object",
        "properties": {INPUT_KEY: schema},
        "required": [INPUT_KEY],
        "additionalProperties": False,
    }
    tool = Tool(
        spec["name"], description, parameters, schema_path=f"{where}.format", text_input=text_input
    )
    return CustomTool(tool, dict(spec) if wire is None else wire)


def _compile(syntax: str, definition: str, param: str) -> None:
    """A 400 naming the grammar's error, if llguidance cannot compile it."""
    try:
        grammar = (
            llguidance.LLMatcher.grammar_from_lark(definition)
            if syntax == "lark"
            else llguidance.LLMatcher.grammar_from_regex(definition)
        )
        failed, said = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except ValueError as e:
        failed, said = True, [str(e)]
    if failed:
        reason = " ".join(" ".join(said).split())[:400]
        raise InvalidRequest(
            f"'{param}': the {syntax} grammar does not compile: {reason}", param=param
        )


def _quoted(definition: str, param: str) -> str:
    """The grammar as it holds the inside of a JSON string; a 400 where that cannot be."""
    try:
        quoted = quote_lark(definition)
    except LarkQuoteError as e:
        raise InvalidRequest(f"'{param}': {e}.", param=param) from e
    _compile("lark", quoted, param)
    return quoted


def arguments(text: str) -> str:
    """A custom call's input as the JSON arguments the model writes (history sent back)."""
    return orjson.dumps({INPUT_KEY: text}).decode()


def input_so_far(arguments_text: str) -> str:
    """The input a custom call's JSON arguments hold so far, decoded up to the last whole
    character (the arguments stream in pieces that may end inside an escape)."""
    if not arguments_text.startswith(_HEAD):
        whole = _whole(arguments_text)
        return whole if whole is not None else ""
    raw = arguments_text[len(_HEAD) :]
    if raw.endswith('"}') and _whole(arguments_text) is not None:
        raw = raw[:-2]
    raw = _safe_prefix(raw)
    if raw.endswith('"') and _escaped(raw, len(raw) - 1):  # the string closed, "}" to come
        raw = raw[:-1]
    try:
        text = str(orjson.loads(f'"{raw}"'))
    except orjson.JSONDecodeError:
        return ""
    if text and "\ud800" <= text[-1] <= "\udbff":  # half of a surrogate pair so far
        text = text[:-1]
    return text


def _whole(arguments_text: str) -> str | None:
    try:
        value = orjson.loads(arguments_text)
    except orjson.JSONDecodeError:
        return None
    found = value.get(INPUT_KEY) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _safe_prefix(raw: str) -> str:
    """`raw` less an escape it ends inside of (`\\`, `\\u12`, the first half of a pair)."""
    slashes = len(raw) - len(raw.rstrip("\\"))
    if slashes % 2:
        return _safe_prefix(raw[:-1])
    cut = raw.rfind("\\u")
    if cut != -1 and _escaped(raw, cut):
        tail = raw[cut + 2 :]
        if len(tail) < 4 and all(c in _HEX for c in tail):
            return _safe_prefix(raw[:cut])
        if len(tail) == 4 and tail[0] in "dD" and tail[1] in "89abAB":  # a high surrogate
            return raw[:cut]
    return raw


def _escaped(raw: str, at: int) -> bool:
    """Whether the backslash at `at` starts an escape (an even run of backslashes before it)."""
    run = len(raw[:at]) - len(raw[:at].rstrip("\\"))
    return run % 2 == 0
