"""OpenAI Responses requests: a POST /v1/responses body, declared, to a GenerationRequest.

The body is validated as `ResponsesBody`: its input items (`responses_input`), its tools
(`responses_tools`), `tool_choice` and `text.format` are tagged unions on `type`, and
`validation` names the param of a failed check. The items become the one internal
conversation; `instructions` its system turn, which a follow-up does not inherit (as OpenAI
does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, Discriminator, Field, Tag, with_config
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api import fields as f
from tholos_mlx.api.fields import ToolName, kind, load_object
from tholos_mlx.api.responses_input import Input, conversation, named_results
from tholos_mlx.api.responses_items import input_items
from tholos_mlx.api.responses_output import Echo
from tholos_mlx.api.responses_tools import Offered, Tools, hosted, offered
from tholos_mlx.api.shared_openai import Mode, NamedChoice, Temperature, tool_choice
from tholos_mlx.api.validation import WHOLE, WIRE, check, refuse, reject, type_of
from tholos_mlx.request import (
    TEXT,
    GenerationRequest,
    Message,
    ResponseFormat,
    Tool,
    ToolChoice,
)

_EXAMPLE = '{"input": "Hello"}'
_AUTO = ToolChoice("auto")  # left out, it is "auto" even without tools, as OpenAI echoes it
_JSON_OBJECT = ResponseFormat("json_object")
_NO_TOOLS = Offered()


@dataclass(frozen=True)
class ResponsesRequest:
    """A /v1/responses request: this turn's input, what the answer repeats, the sampling settings."""

    input: tuple[Message, ...]
    echo: Echo
    base: GenerationRequest  # every setting; its messages are filled in by generation()
    sent: str | list[Any]  # `input` as the client sent it

    @functools.cached_property
    def items(self) -> tuple[dict[str, Any], ...]:
        """`input` as sent, each item with an id, as input_items lists it: made only for a
        response that is stored (Codex sends `store: false`)."""
        return input_items(self.sent)

    def generation(self, history: tuple[Message, ...] = ()) -> GenerationRequest:
        """The request to run: instructions, the stored conversation, then this turn's input."""
        system = (Message("system", self.echo.instructions),) if self.echo.instructions else ()
        return replace(self.base, messages=named_results(system + history + self.input))


# -- the body, declared --


def _refuse(message: str) -> Callable[[Any], Any]:
    """A validator refusing any value but absent (null)."""

    def check(value: Any) -> Any:
        if value is not None:
            raise refuse(message)
        return value

    return check


def _in_foreground(value: Any) -> Any:
    if value is True:
        raise refuse(
            "responses are not supported: this server answers while you wait (stream for progress)."
        )
    return value


def _no_logprobs(value: Any) -> Any:
    if value not in (None, 0):
        raise refuse("is not supported: no logprobs.")
    return value


class CustomChoice(TypedDict):
    """`{"type": "custom", "name"}`: the model must call this custom tool."""

    type: Literal["custom"]
    name: Annotated[str, Field(description="the custom tool's name")]


def _built_in(raw: dict[str, Any]) -> Any:
    forced = raw.get("type")
    if hosted(forced):
        raise reject(
            f"forces {forced!r}, a hosted tool this server cannot run; "
            'use "auto", "required" or a function.'
        )
    raise reject(
        'must be "none", "auto", "required" or {"type": "function", "name": ...}: this server '
        f"has no built-in tools; got type {forced!r}."
    )


_CHOICES = {"function": "<named>", "custom": "<custom>"}


def _choice_kind(raw: Any) -> str | None:
    if isinstance(raw, str):
        return "<mode>"
    return _CHOICES.get(type_of(raw) or "", "<other>") if isinstance(raw, dict) else None


_CHOICE_RULE = '"none", "auto", "required" or {"type": "function", "name": ...}'
Choice = Annotated[
    Annotated[Mode, Tag("<mode>")]
    | Annotated[NamedChoice, Tag("<named>")]
    | Annotated[CustomChoice, Tag("<custom>")]
    | Annotated[Any, AfterValidator(_built_in), Tag("<other>")],
    Discriminator(_choice_kind, custom_error_type="wrong_type", custom_error_message="a choice"),
]


class JsonSchemaFormat(TypedDict):
    """`{"type": "json_schema", "name", "schema", "strict"}`: the answer matches the schema."""

    type: Literal["json_schema"]
    name: ToolName
    schema: Annotated[dict[str, Any], Field(description="a JSON Schema object")]
    strict: NotRequired[Annotated[bool | None, Field(description="true or false")]]


class PlainFormat(TypedDict):
    """`{"type": "text"}` or `{"type": "json_object"}`."""

    type: Literal["text", "json_object"]


_FORMAT_RULE = 'an object such as {"type": "json_object"}'


def _unknown_format(raw: dict[str, Any]) -> Any:
    given = raw.get("type")
    got = repr(given) if isinstance(given, str) else kind(given)
    raise reject(f'must be {_FORMAT_RULE}: "text", "json_object" or "json_schema"; got type {got}.')


_FORMATS = {"text": "<plain>", "json_object": "<plain>", "json_schema": "<json_schema>"}


def _format_kind(raw: Any) -> str | None:
    return _FORMATS.get(type_of(raw) or "", "<other>") if isinstance(raw, dict) else None


Format = Annotated[
    Annotated[PlainFormat, Tag("<plain>")]
    | Annotated[JsonSchemaFormat, Tag("<json_schema>")]
    | Annotated[Any, AfterValidator(_unknown_format), Tag("<other>")],
    Discriminator(_format_kind, custom_error_type="wrong_type", custom_error_message="a format"),
]


class TextSpec(TypedDict):
    """`text`: the answer's format; `verbosity` is accepted and left to the model."""

    format: NotRequired[Annotated[Format | None, Field(description=_FORMAT_RULE)]]


@with_config(WIRE)
class ResponsesBody(TypedDict):
    """A /v1/responses body, fields in the order they are checked; the agents' fields that
    change nothing here (include, reasoning, prompt_cache_key...) are accepted as anything."""

    background: NotRequired[Annotated[Any, AfterValidator(_in_foreground)]]
    conversation: NotRequired[
        Annotated[
            Any,
            AfterValidator(
                _refuse(
                    "is not supported here: pass 'previous_response_id' to continue a stored "
                    "response."
                )
            ),
        ]
    ]
    prompt: NotRequired[
        Annotated[
            Any,
            AfterValidator(
                _refuse(
                    "is not supported here: send the prompt's text in 'instructions' and 'input'."
                )
            ),
        ]
    ]
    top_logprobs: NotRequired[Annotated[Any, AfterValidator(_no_logprobs)]]
    tools: NotRequired[Tools]
    previous_response_id: NotRequired[
        Annotated[str | None, Field(min_length=1, description="the id of a stored response")]
    ]
    instructions: NotRequired[Annotated[str | None, Field(description="a string")]]
    max_output_tokens: NotRequired[
        Annotated[int | None, Field(ge=1, description="an integer of at least 1")]
    ]
    parallel_tool_calls: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    store: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    temperature: NotRequired[Temperature]
    top_p: NotRequired[f.TopP]
    tool_choice: NotRequired[Annotated[Choice | None, WHOLE, Field(description=_CHOICE_RULE)]]
    text: NotRequired[
        Annotated[
            TextSpec | None,
            Field(description='an object such as {"format": {"type": "json_object"}}'),
        ]
    ]
    metadata: NotRequired[
        Annotated[dict[str, str] | None, Field(description="an object of string values")]
    ]
    model: NotRequired[f.ModelId]
    seed: NotRequired[Annotated[int | None, Field(description="an integer")]]
    stream: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    input: Input


# -- the body to the internal request --


def parse_responses(body: bytes) -> ResponsesRequest:
    """Validate a raw /v1/responses body; InvalidRequest names the offending param."""
    raw = load_object(body, _EXAMPLE)  # kept: the input items and custom tools are echoed as sent
    data = check(ResponsesBody, raw, "")
    declared = data.get("tools")
    tools = offered(declared, raw["tools"]) if declared else _NO_TOOLS
    temperature, top_p = data.get("temperature"), data.get("top_p")
    functions = tuple(tools.tools)
    echo = Echo(
        instructions=data.get("instructions"),
        max_output_tokens=data.get("max_output_tokens"),
        parallel_tool_calls=data.get("parallel_tool_calls") is not False,
        previous_response_id=data.get("previous_response_id"),
        store=data.get("store") is not False,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        tools=functions,
        tool_choice=_tool_choice(data.get("tool_choice"), functions),
        text_format=_text_format(data.get("text")),
        metadata=data.get("metadata") or {},
        namespaces=tools.namespaces,
        custom=tools.custom,
    )
    base = GenerationRequest(
        messages=(),
        model=data.get("model") or None,
        temperature=echo.temperature,
        top_p=echo.top_p,
        max_tokens=echo.max_output_tokens,
        seed=data.get("seed"),
        response_format=echo.text_format,
        tools=functions,
        tool_choice=echo.tool_choice,
        parallel_tool_calls=echo.parallel_tool_calls,
        stream=bool(data.get("stream")),
    )
    turns = conversation(data["input"])
    return ResponsesRequest(turns, echo, base, raw["input"])


def _tool_choice(
    raw: Mode | NamedChoice | CustomChoice | None, tools: tuple[Tool, ...]
) -> ToolChoice:
    """The Responses shapes: "none", "auto", "required", or a function or custom tool by name."""
    if raw is None:
        return _AUTO
    if isinstance(raw, dict):  # a custom tool, by its name: called as functions are
        raw = NamedChoice.model_construct(type="function", name=raw["name"])
    return tool_choice(raw, tools)


def _text_format(raw: TextSpec | None) -> ResponseFormat:
    fmt = raw.get("format") if raw else None
    if fmt is None:
        return TEXT
    if fmt["type"] == "text":
        return TEXT
    if fmt["type"] == "json_object":
        return _JSON_OBJECT
    spec = cast(JsonSchemaFormat, fmt)  # the tag said so; mypy narrows only one-value tags
    strict = spec.get("strict") is True
    return ResponseFormat("json_schema", spec["schema"], spec["name"], strict, "text.format")


def wire_param(param: str | None) -> str | None:
    """An internal request's field name (from the engine's errors) as this API calls it."""
    if param is None:
        return None
    if param.startswith("messages"):  # its indexes count instructions and history too
        return "input"
    if param.startswith("response_format"):
        return "text.format" + param[len("response_format") :].removeprefix(".json_schema")
    if param.startswith("tools[") and ".function" in param:
        return param.replace(".function", "", 1)
    if param == "max_tokens":  # the memory guard's refusal
        return "max_output_tokens"
    return param
