"""OpenAI's request shapes that both OpenAI dialects read: function tools, `tool_choice` and
`response_format`, declared once.

Chat completions nest them as OpenAI's chat API does; Responses reads the same shapes from its
own fields (`tool_choice`, `text.format`) and passes the param it names them by.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api import fields as f
from tholos_mlx.api.validation import PARENT, WHOLE, Wire, reject
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import ResponseFormat, Tool, ToolChoice

# OpenAI's sampling temperature range, the same in both of its dialects.
Temperature = Annotated[float | None, Field(ge=0, le=2, description="a number from 0 to 2")]

FUNCTION_RULE = "an object with 'name' and 'parameters'"
CHOICE_RULE = '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}'


class FunctionSpec(TypedDict):
    """A function the model may call: OpenAI's `function` object (Responses: the tool itself)."""

    name: f.ToolName
    description: NotRequired[Annotated[str | None, Field(description="a string")]]
    parameters: NotRequired[Annotated[dict[str, Any] | None, Field(description=f.OBJECT_SCHEMA)]]
    strict: NotRequired[Annotated[bool | None, Field(description="true or false")]]


def function_tool(spec: FunctionSpec, where: str) -> Tool:
    """The internal tool; no parameters means an object with none. `where` names the spec."""
    param = f"{where}.parameters"
    schema = f.object_schema(spec.get("parameters"), param)
    strict = bool(spec.get("strict"))
    return Tool(spec["name"], spec.get("description"), schema, strict, schema_path=param)


class _FunctionName(Wire):
    name: str = Field(description="the function's name")


class NamedChoice(Wire):
    """`{"type": "function", "function": {"name"}}`, or Responses' flat `{"type", "name"}`."""

    type: Literal["function"]
    function: _FunctionName | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> NamedChoice:
        if self.function is None and self.name is None:
            raise reject('must name the function: {"type": "function", "function": {"name": ...}}.')
        return self

    @property
    def function_name(self) -> str:
        """The name, from whichever shape gave it."""
        return self.function.name if self.function is not None else self.name or ""


Mode = Literal["none", "auto", "required"]
_MODES: dict[str, ToolChoice] = {m: ToolChoice(m) for m in ("none", "auto", "required")}  # once


def _choice_shape(raw: Any) -> str | None:
    if isinstance(raw, str):
        return "<mode>"
    return "<named>" if isinstance(raw, dict) else None


ChoiceSpec = Annotated[
    Annotated[Mode, Tag("<mode>")] | Annotated[NamedChoice, Tag("<named>")],
    Discriminator(_choice_shape, custom_error_type="wrong_type", custom_error_message="a mode"),
]


ChoiceField = Annotated[ChoiceSpec | None, WHOLE, Field(description=CHOICE_RULE)]


def tool_choice(
    raw: Mode | NamedChoice | None, tools: tuple[Tool, ...], param: str = "tool_choice"
) -> ToolChoice:
    """The declared `tool_choice` as the internal one; it must name a tool that was given."""
    if raw is None:
        return _MODES["auto" if tools else "none"]
    if isinstance(raw, NamedChoice):
        choice = ToolChoice("function", raw.function_name)
    else:
        choice = _MODES[raw]
    if choice.forced and not tools:
        raise InvalidRequest(
            f"'{param}' asks for a tool call, but 'tools' is empty or missing.", param=param
        )
    if choice.mode == "function" and choice.name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"'{param}' names {choice.name!r}, which is not one of the functions in 'tools'.",
            param=param,
        )
    return choice


class JsonSchemaSpec(Wire):
    """`response_format.json_schema`: the schema the answer must match, named."""

    RULE: ClassVar[str] = 'an object: {"name", "schema", "strict"}, the name required'
    name: str = Field(pattern=f.TOOL_NAME.pattern, description=f.NAME_RULE)
    schema_: Any = Field(None, alias="schema")  # checked by the format: it names the error
    strict: bool | None = Field(None, description="true or false")


class ResponseFormatSpec(Wire):
    """`response_format`: text, json_object, or json_schema with its schema."""

    RULE: ClassVar[str] = 'an object such as {"type": "json_object"}'
    type: Annotated[Literal["text", "json_object", "json_schema"], PARENT]
    json_schema: Annotated[JsonSchemaSpec | None, PARENT] = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatSpec:
        if self.type == "json_schema" and self.json_schema is None:
            raise reject(f"must hold 'json_schema', {JsonSchemaSpec.RULE}.")
        schema = self.json_schema.schema_ if self.json_schema else None
        if schema is not None and not isinstance(schema, dict):
            raise reject(f"schema must be a JSON Schema object; got {f.kind(schema)}.")
        return self

    def format(self) -> ResponseFormat:
        """The internal response format."""
        spec = self.json_schema
        if self.type != "json_schema" or spec is None:
            return ResponseFormat(self.type) if self.type == "json_object" else ResponseFormat()
        return ResponseFormat("json_schema", spec.schema_ or {}, spec.name, spec.strict is True)


FormatSpec = Annotated[ResponseFormatSpec | None, Field(description=ResponseFormatSpec.RULE)]
