"""OpenAI chat completion requests: the /v1/chat/completions body, declared, to a GenerationRequest.

The body is validated as `ChatBody` (types, ranges, shapes; `validation` names a failing param);
what joins fields (a tool turn's call id, the parts only an assistant may send, options that need
`stream`) is checked while the typed body becomes the internal request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, with_config
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api import fields as f
from tholos_mlx.api.shared_openai import (
    FUNCTION_RULE,
    ChoiceField,
    FormatSpec,
    FunctionSpec,
    Temperature,
    function_tool,
    tool_choice,
)
from tholos_mlx.api.validation import (
    LIST_TAG,
    PARENT,
    TEXT_TAG,
    WIRE,
    Rule,
    Wire,
    load,
    refuse,
    stop_strings,
    text_or_list,
)
from tholos_mlx.errors import InvalidRequest, Unsupported
from tholos_mlx.request import TEXT, GenerationRequest, Message, Role, ToolCall

ROLES: dict[str, Role] = {  # "function" is not one: it is refused
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
MAX_STOPS = 4
_EXAMPLE = '{"messages": [{"role": "user", "content": "Hello"}]}'
_TOOL_RULE = '{"type": "function", "function": {...}}'
_PARTS = 'a string or an array of {"type": "text", "text": ...} parts'
_ROLES = "one of 'system', 'developer', 'user', 'assistant' or 'tool'"


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request: the internal request and what only this dialect's answer needs."""

    request: GenerationRequest
    include_usage: bool = False


# -- the body, declared --


# The turns of a conversation are many: they are TypedDicts, which pydantic fills twice as fast
# as models (measured: 63 turns, 38 us against 68 us).


class Part(TypedDict):
    """One part of a message's content; which types are read depends on the role."""

    type: Annotated[str, Field(description='a string such as "text"')]
    text: NotRequired[Annotated[str | None, Field(description="a string")]]
    refusal: NotRequired[Annotated[str | None, Field(description="a string")]]


Content = Annotated[
    Annotated[str, Tag(TEXT_TAG)]
    | Annotated[
        list[Annotated[Part, Rule('an object {"type": "text", "text": ...}')]],
        Tag(LIST_TAG),
        Field(min_length=1),
    ],
    Discriminator(text_or_list, custom_error_type="wrong_type", custom_error_message=_PARTS),
]
_FUNCTION_RULE = "an object with 'name' and 'arguments'"


class CalledFunction(TypedDict):
    """The function an assistant's past call named, and its arguments as JSON text."""

    name: f.NonEmpty
    arguments: NotRequired[Annotated[str, Field(description="a string of JSON")]]


class PastCall(TypedDict):
    """A tool call in an assistant turn of the history."""

    type: NotRequired[Annotated[Literal["function"], PARENT]]
    function: Annotated[CalledFunction, Field(description=_FUNCTION_RULE)]
    id: f.NonEmpty


class ChatMessage(TypedDict):
    """One turn of `messages`."""

    role: Annotated[
        Literal["system", "developer", "user", "assistant", "tool", "function"],
        Field(description=_ROLES),
    ]
    content: NotRequired[Annotated[Content | None, Field(description=_PARTS)]]
    tool_call_id: NotRequired[
        Annotated[str | None, Field(description="the id of the call it answers")]
    ]
    tool_calls: NotRequired[
        Annotated[
            list[Annotated[PastCall, Rule('{"id", "type": "function", "function": {...}}')]] | None,
            Field(description="an array of tool calls"),
        ]
    ]


class ChatTool(TypedDict):
    """One of `tools`: a function, in OpenAI's chat wrapping."""

    type: Annotated[
        Literal["function"], Field(description='"function": this server calls functions only')
    ]
    function: Annotated[FunctionSpec, Field(description=FUNCTION_RULE)]


class StreamOptions(Wire):
    """`stream_options`."""

    include_usage: bool | None = Field(None, description="true or false")


if TYPE_CHECKING:
    Stops = list[str] | None
else:  # one declaration for every dialect, with this dialect's limit
    Stops = stop_strings(MAX_STOPS)
PositiveInt = Annotated[int | None, Field(ge=1, description="an integer of at least 1")]


class Prediction(Wire):
    """`prediction`: OpenAI's Predicted Outputs, the text the answer is expected to repeat."""

    RULE: ClassVar[str] = '{"type": "content", "content": "the text you expect"}'
    type: Literal["content"] = Field(description='"content"')
    content: Content = Field(description=_PARTS)


def _one_choice(n: int | None) -> int | None:
    if n is not None and n != 1:
        raise refuse(f"must be 1: this server returns exactly one choice; got {n}.")
    return n


def _no_logprobs(logprobs: bool | None) -> bool | None:
    if logprobs:
        raise refuse("is not supported by this server; leave it out or set it to false.")
    return logprobs


def _no_top_logprobs(value: Any) -> Any:
    if value is not None:
        raise refuse("is not supported by this server; leave it out.")
    return value


def _text_only(value: Any) -> Any:
    if value is not None and value != ["text"]:
        raise refuse('can only be ["text"]: this server answers in text only.')
    return value


@with_config(WIRE)
class ChatBody(TypedDict):
    """A /v1/chat/completions body, fields in the order they are checked."""

    messages: Annotated[
        list[Annotated[ChatMessage, Rule("an object with 'role' and 'content'")]],
        Field(min_length=1, description='a non-empty array of {"role", "content"} objects'),
    ]
    n: NotRequired[
        Annotated[int | None, Field(description="an integer"), AfterValidator(_one_choice)]
    ]
    logprobs: NotRequired[
        Annotated[bool | None, Field(description="true or false"), AfterValidator(_no_logprobs)]
    ]
    top_logprobs: NotRequired[Annotated[Any, AfterValidator(_no_top_logprobs)]]
    modalities: NotRequired[Annotated[Any, AfterValidator(_text_only)]]
    max_tokens: NotRequired[PositiveInt]
    max_completion_tokens: NotRequired[PositiveInt]
    stream_options: NotRequired[
        Annotated[
            StreamOptions | None,
            Field(description='an object such as {"include_usage": true}'),
        ]
    ]
    stream: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    tools: NotRequired[
        Annotated[
            list[Annotated[ChatTool, Rule(_TOOL_RULE)]] | None,
            Field(description="an array of function tools"),
        ]
    ]
    model: NotRequired[f.ModelId]
    temperature: NotRequired[Temperature]
    top_p: NotRequired[f.TopP]
    stop: NotRequired[Stops]
    seed: NotRequired[Annotated[int | None, Field(description="an integer")]]
    response_format: NotRequired[FormatSpec]
    tool_choice: NotRequired[ChoiceField]
    parallel_tool_calls: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    prediction: NotRequired[
        Annotated[
            Prediction | None,
            Field(description='an object {"type": "content", "content": "the text you expect"}'),
        ]
    ]


# -- the body to the internal request --


def parse_chat(body: bytes) -> ChatRequest:
    """Validate a raw /v1/chat/completions body; InvalidRequest names the offending param."""
    data = load(ChatBody, body, _EXAMPLE)
    messages = tuple(_message(m, i) for i, m in enumerate(data["messages"]))
    stream = bool(data.get("stream"))
    options, declared = data.get("stream_options"), data.get("tools")
    if options is not None and not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    tools = (
        f.distinct_names(
            [function_tool(t["function"], f"tools[{i}].function") for i, t in enumerate(declared)],
            "function name",
        )
        if declared
        else ()
    )
    # max_completion_tokens is OpenAI's current name; it wins over the deprecated one.
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    temperature, top_p = data.get("temperature"), data.get("top_p")
    stop = data.get("stop")
    fmt, prediction = data.get("response_format"), data.get("prediction")
    request = GenerationRequest(
        messages=messages,
        model=data.get("model") or None,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        max_tokens=max_tokens,
        stop=tuple(s for s in stop if s) if stop else (),
        stream=stream,
        seed=data.get("seed"),
        response_format=fmt.format() if fmt else TEXT,
        tools=tools,
        tool_choice=tool_choice(data.get("tool_choice"), tools),
        parallel_tool_calls=data.get("parallel_tool_calls") is not False,
        prediction=_text(prediction.content, "prediction.content") if prediction else None,
    )
    include_usage = bool(options and options.include_usage)
    return ChatRequest(request, include_usage)


def _message(m: ChatMessage, i: int) -> Message:
    role = ROLES.get(m["role"])
    content = m.get("content")
    calls = m.get("tool_calls")
    if role is not None and role != "tool" and type(content) is str and not calls:
        return Message(role, content)  # the common turn: nothing to join or check
    where = f"messages[{i}]"
    if role is None:  # declared so that its error can say what to send instead
        raise Unsupported(
            f"'{where}.role' is 'function', OpenAI's retired form of tool results; "
            'send {"role": "tool", "tool_call_id", "content"} instead.',
            param=f"{where}.role",
        )
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not call_id:
            raise InvalidRequest(
                f"'{where}.tool_call_id' is required on a tool message: the id of the call it "
                "answers.",
                param=f"{where}.tool_call_id",
            )
        return Message("tool", _text(content, f"{where}.content"), tool_call_id=call_id)
    assistant = role == "assistant"
    past = tuple(
        ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments", "{}"))
        for c in (calls or () if assistant else ())
    )
    return Message(role, _text(content, f"{where}.content", assistant=assistant), tool_calls=past)


def _text(content: str | list[Part] | None, where: str, *, assistant: bool = False) -> str:
    """A message's content: a string, or text parts joined with "" (an assistant's may also
    be null, and hold the `refusal` parts OpenAI answers with: their text is what it said)."""
    if isinstance(content, str):
        return content
    if content is None:
        if assistant:  # an assistant turn may carry no text (OpenAI allows null)
            return ""
        raise InvalidRequest(f"'{where}' is required: {_PARTS}.", param=where)
    return "".join(_part(part, f"{where}[{j}]", assistant) for j, part in enumerate(content))


def _part(part: Part, where: str, assistant: bool) -> str:
    kind = part["type"]
    if kind == "refusal" and assistant:
        refusal = part.get("refusal")
        if refusal is None:
            raise InvalidRequest(
                f"'{where}.refusal' is required: a string.", param=f"{where}.refusal"
            )
        return refusal
    if kind != "text":
        raise Unsupported(
            f"'{where}.type' is {kind!r}, but this server accepts only text: "
            'use {"type": "text", "text": ...} parts or a plain string.',
            param=f"{where}.type",
        )
    text = part.get("text")
    if text is None:
        raise InvalidRequest(f"'{where}.text' is required: a string.", param=f"{where}.text")
    return text
