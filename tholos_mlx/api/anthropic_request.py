"""Anthropic Messages requests: the /v1/messages (and count_tokens) body to a GenerationRequest.

Blocks map onto the one internal model: text joins into a turn's content, an assistant's
`tool_use` blocks become its tool calls (arguments = the JSON of `input`), and each user
`tool_result` block becomes a tool turn answering that call. Fields that only steer Anthropic's
own service (`metadata`, `cache_control`, `service_tier`, `context_management`, `output_config`'s
`effort`, thinking budgets) are accepted and ignored; a `system` turn inside `messages` (Claude
Code's mid-conversation system beta) is system text at that point of the conversation; anything
that would need images, documents or server-side tools gets a 400. The body is declared as
`MessagesBody`; `validation` turns a failed check into the 400 that names its param.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, Discriminator, Field, Tag, with_config
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api import fields as f
from tholos_mlx.api.validation import (
    LIST_TAG,
    PARENT,
    TEXT_TAG,
    WIRE,
    Rule,
    load,
    refuse,
    stop_strings,
    text_or_list,
)
from tholos_mlx.errors import InvalidRequest, Unsupported
from tholos_mlx.request import (
    TEXT,
    GenerationRequest,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)

MAX_STOPS = 64  # Anthropic documents no limit; the stop matcher's work grows with each one
BLOCK_JOIN = "\n\n"  # between text blocks of one turn (and of `system`)
ERROR_PREFIX = "Error: "  # a tool_result with is_error: the model should know the call failed
THINKING_ON = ("enabled", "adaptive")
_EXAMPLE = (
    '{"model": "MODEL", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}'
)
_IGNORED_BLOCKS = ("thinking", "redacted_thinking")  # our own thinking, sent back: not a prompt
_TEXT_BLOCK = '{"type": "text", "text": ...}'


@dataclass(frozen=True)
class MessagesRequest:
    """A Messages request: the internal request and what only this dialect's answer needs."""

    request: GenerationRequest
    thinking: bool = False  # the client asked for thinking blocks (`thinking.type` enabled)


# -- the body, declared --
# Turns and blocks are many: TypedDicts, which pydantic fills about twice as fast as models.


class TextBlock(TypedDict):
    """`{"type": "text", "text"}`; `cache_control` and `citations` are accepted and ignored."""

    type: Literal["text"]
    text: Annotated[str, Field(description="a string")]


class ToolUseBlock(TypedDict):
    """A call the assistant made, in the history."""

    type: Literal["tool_use"]
    id: f.NonEmpty
    name: f.NonEmpty
    input: NotRequired[
        Annotated[dict[str, Any], Field(description="an object (the tool's arguments)")]
    ]


class AnyBlock(TypedDict):
    """A block of another type (thinking, image, document...): the turn decides what it means."""

    type: Annotated[str, Field(description='a string such as "text"')]
    text: NotRequired[Annotated[str, Field(description="a string")]]


_RESULT_CONTENT = f"a string or an array of {_TEXT_BLOCK} blocks"
ResultContent = Annotated[
    Annotated[str, Tag(TEXT_TAG)]
    | Annotated[list[Annotated[AnyBlock, Rule(f"a block such as {_TEXT_BLOCK}")]], Tag(LIST_TAG)],
    Discriminator(text_or_list, custom_error_type="wrong_type", custom_error_message="content"),
]


class ToolResultBlock(TypedDict):
    """What a call returned, in a user turn."""

    type: Literal["tool_result"]
    tool_use_id: Annotated[
        str, Field(min_length=1, description="the id of the tool_use block it answers")
    ]
    content: NotRequired[Annotated[ResultContent | None, Field(description=_RESULT_CONTENT)]]
    is_error: NotRequired[Annotated[bool | None, Field(description="true or false")]]


_BLOCK_TAGS = {"text": "<text>", "tool_use": "<tool_use>", "tool_result": "<tool_result>"}


def _block_kind(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    return _BLOCK_TAGS.get(kind, "<other>") if isinstance(kind, str) else "<other>"


Block = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ToolUseBlock, Tag("<tool_use>")]
    | Annotated[ToolResultBlock, Tag("<tool_result>")]
    | Annotated[AnyBlock, Tag("<other>")],
    Discriminator(_block_kind, custom_error_type="wrong_type", custom_error_message="a block"),
    Rule(f"a content block such as {_TEXT_BLOCK}"),
]
_CONTENT = "a string or an array of content blocks"
Content = Annotated[
    Annotated[str, Tag(TEXT_TAG)] | Annotated[list[Block], Tag(LIST_TAG)],
    Discriminator(text_or_list, custom_error_type="wrong_type", custom_error_message="content"),
]


class Turn(TypedDict):
    """One of `messages`: a user or assistant turn, or (Claude Code) a system one."""

    role: Annotated[
        Literal["user", "assistant", "system"],
        Field(description="'user', 'assistant' or 'system'"),
    ]
    content: Annotated[Content, Field(description=_CONTENT)]


def _own_tool(kind: str | None) -> str | None:
    if kind not in (None, "custom"):
        raise refuse(
            f"is {kind!r}, a tool Anthropic's servers run; this server runs none: give your own "
            'tools as {"name", "description", "input_schema"}.'
        )
    return kind


_SCHEMA_RULE = "a JSON Schema of the tool's input object"


class AnthropicTool(TypedDict):
    """One of `tools`: `{"name", "description", "input_schema"}` (`cache_control` ignored)."""

    type: NotRequired[Annotated[str | None, AfterValidator(_own_tool)]]
    name: f.ToolName
    description: NotRequired[Annotated[str | None, Field(description="a string")]]
    input_schema: Annotated[dict[str, Any] | None, Field(description=_SCHEMA_RULE)]
    strict: NotRequired[Annotated[bool | None, Field(description="true or false")]]


_CHOICE_RULE = (
    '{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": ...} or {"type": "none"}'
)


class AnthropicChoice(TypedDict):
    """`tool_choice`."""

    type: Annotated[Literal["auto", "any", "tool", "none"], PARENT]
    name: NotRequired[Annotated[str | None, Field(description="a string: the tool to call")]]
    disable_parallel_tool_use: NotRequired[
        Annotated[bool | None, Field(description="true or false")]
    ]


_FORMAT_RULE = '{"type": "json_schema", "schema": {...}}'


class OutputFormat(TypedDict):
    """`output_config.format` (the beta's top-level `output_format`)."""

    type: Annotated[Literal["json_schema"], PARENT]
    schema: Annotated[dict[str, Any], Field(description="a JSON Schema object")]


class OutputConfig(TypedDict):
    """`output_config`: its format; `effort` is accepted and ignored."""

    format: NotRequired[Annotated[OutputFormat | None, Field(description=_FORMAT_RULE)]]
    effort: NotRequired[Any]


if TYPE_CHECKING:
    Stops = list[str] | None
else:  # one declaration for every dialect, with this dialect's limit
    Stops = stop_strings(MAX_STOPS)


@with_config(WIRE)
class MessagesBody(TypedDict):
    """A /v1/messages body, fields in the order they are checked. Fields that steer only
    Anthropic's own service are declared as anything and ignored."""

    max_tokens: NotRequired[
        Annotated[int | None, Field(ge=1, description="an integer of at least 1")]
    ]
    tools: NotRequired[
        Annotated[
            list[Annotated[AnthropicTool, Rule("an object with 'name' and 'input_schema'")]] | None,
            Field(description='an array of {"name", "description", "input_schema"} objects'),
        ]
    ]
    tool_choice: NotRequired[Annotated[AnthropicChoice | None, Field(description=_CHOICE_RULE)]]
    messages: Annotated[
        list[Annotated[Turn, Rule("an object with 'role' and 'content'")]],
        Field(min_length=1, description='a non-empty array of {"role", "content"} objects'),
    ]
    output_config: NotRequired[Annotated[OutputConfig | None, Field(description="an object")]]
    output_format: NotRequired[Annotated[OutputFormat | None, Field(description=_FORMAT_RULE)]]
    system: NotRequired[
        Annotated[
            Content | None, Field(description=f"a string or an array of {_TEXT_BLOCK} blocks")
        ]
    ]
    model: NotRequired[f.ModelId]
    temperature: NotRequired[
        Annotated[float | None, Field(ge=0, le=1, description="a number from 0 to 1")]
    ]
    top_p: NotRequired[f.TopP]
    top_k: NotRequired[
        Annotated[int | None, Field(ge=0, description="an integer of at least 0 (0: no top-k)")]
    ]
    stop_sequences: NotRequired[Stops]
    stream: NotRequired[Annotated[bool | None, Field(description="true or false")]]
    thinking: NotRequired[Any]  # read loosely: only an enabled type asks for thinking blocks
    metadata: NotRequired[Any]
    context_management: NotRequired[Any]
    service_tier: NotRequired[Any]


# -- the body to the internal request --


def parse_messages(body: bytes, *, count_only: bool = False) -> MessagesRequest:
    """Validate a raw /v1/messages body (count_only: /v1/messages/count_tokens, no max_tokens)."""
    data = load(MessagesBody, body, _EXAMPLE)
    max_tokens = data.get("max_tokens")
    if max_tokens is None and not count_only:
        raise InvalidRequest(
            "'max_tokens' is required: the most tokens the answer may have, such as 1024.",
            param="max_tokens",
        )
    declared = data.get("tools")
    tools = _tools(declared) if declared else ()
    choice, parallel = _tool_choice(data.get("tool_choice"), tools)
    turns = _messages(data["messages"])
    fmt = _output_format(data)
    prefill = _prefill(turns)
    if prefill and (fmt.kind != "text" or choice.forced):
        raise InvalidRequest(
            "A begun answer (a last assistant message) cannot be combined with output_format "
            "or a forced tool_choice: those write the answer from its start.",
            param="messages",
        )
    system = data.get("system")
    temperature, top_p, stops = (
        data.get("temperature"),
        data.get("top_p"),
        data.get("stop_sequences"),
    )
    request = GenerationRequest(
        messages=(_system_turn(system, "system") if system is not None else ()) + turns,
        continue_final=prefill,
        model=data.get("model") or None,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=data.get("top_k") or 0,
        max_tokens=max_tokens,
        stop=tuple(s for s in stops if s) if stops else (),
        stream=False if count_only else bool(data.get("stream")),
        response_format=fmt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    return MessagesRequest(request, thinking=_thinking(data.get("thinking")))


# -- the conversation --


def _prefill(turns: tuple[Message, ...]) -> bool:
    """Whether the conversation ends with the answer begun (Anthropic's prefill): text in a
    last assistant turn, which the model continues. As Anthropic, no trailing whitespace."""
    last = turns[-1] if turns else None
    if last is None or last.role != "assistant" or last.tool_calls or not last.content:
        return False
    if last.content != last.content.rstrip():
        raise InvalidRequest(
            "final assistant content cannot end with trailing whitespace", param="messages"
        )
    return True


def _system_turn(raw: str | list[Any], where: str) -> tuple[Message, ...]:
    """`system`, or a `system` turn inside `messages`: its text as one system message; none if
    empty."""
    if isinstance(raw, str):
        text = raw
    else:
        text = BLOCK_JOIN.join(_text_block(b, f"{where}[{i}]") for i, b in enumerate(raw))
    return (Message("system", text),) if text else ()


def _messages(raw: list[Turn]) -> tuple[Message, ...]:
    turns: list[Message] = []
    names: dict[str, str] = {}  # tool_use id -> tool name, so a tool turn can name its function
    last = len(raw) - 1
    for i, item in enumerate(raw):
        given, content = item["role"], item["content"]
        if given == "system":
            turns.extend(_system_turn(content, f"messages[{i}].content"))
            continue
        role: Role = "user" if given == "user" else "assistant"
        if isinstance(content, str):
            if content or not (role == "assistant" and i == last):  # "" ending: no prefill
                turns.append(Message(role, content))
            continue
        where = f"messages[{i}].content"
        if role == "assistant":
            turn = _assistant(content, where, names)
            if turn.content or turn.tool_calls or i != last:
                turns.append(turn)
        else:
            if not content:
                raise InvalidRequest(f"'{where}' must not be an empty array.", param=where)
            turns.extend(_user(content, where, names))
    return tuple(turns)


def _assistant(blocks: list[Any], where: str, names: dict[str, str]) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            call = ToolCall(
                block["id"], block["name"], orjson.dumps(block.get("input", {})).decode()
            )
            names[call.id] = call.name
            calls.append(call)
        elif kind not in _IGNORED_BLOCKS:
            _refuse_block(kind, f"{where}[{j}]", "an assistant")
    return Message("assistant", BLOCK_JOIN.join(texts), tool_calls=tuple(calls))


def _user(blocks: list[Any], where: str, names: dict[str, str]) -> list[Message]:
    """A user turn's blocks in order: tool results become tool turns, text a user turn."""
    turns: list[Message] = []
    texts: list[str] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_result":
            if texts:
                turns.append(Message("user", BLOCK_JOIN.join(texts)))
                texts = []
            turns.append(_tool_result(block, f"{where}[{j}]", names))
        else:
            _refuse_block(kind, f"{where}[{j}]", "a user")
    if texts:
        turns.append(Message("user", BLOCK_JOIN.join(texts)))
    return turns


def _refuse_block(kind: str, where: str, whose: str) -> None:
    if kind in ("tool_use", "tool_result"):
        other = "an assistant" if kind == "tool_use" else "a user"
        raise InvalidRequest(
            f"'{where}.type' is {kind!r} in {whose} message; that block belongs in {other} "
            "message.",
            param=f"{where}.type",
        )
    raise Unsupported(
        f"'{where}.type' is {kind!r}, a block this server cannot read: it takes text, "
        "tool_use and tool_result blocks only.",
        param=f"{where}.type",
    )


def _text_block(block: Any, where: str) -> str:
    """A block where only text may stand (`system`, a tool result's content)."""
    kind = block["type"]
    if kind != "text":
        raise Unsupported(
            f"'{where}.type' is {kind!r}; only text blocks ({_TEXT_BLOCK}) are allowed here.",
            param=f"{where}.type",
        )
    text = block.get("text")
    if text is None:
        raise InvalidRequest(f"'{where}.text' is required: a string.", param=f"{where}.text")
    return str(text)


def _tool_result(block: ToolResultBlock, where: str, names: dict[str, str]) -> Message:
    call_id = block["tool_use_id"]
    raw = block.get("content")
    if raw is None:
        text = ""
    elif isinstance(raw, str):
        text = raw
    else:
        text = BLOCK_JOIN.join(_text_block(b, f"{where}.content[{k}]") for k, b in enumerate(raw))
    if block.get("is_error"):
        text = ERROR_PREFIX + text
    return Message("tool", text, tool_call_id=call_id, name=names.get(call_id))


# -- tools, format --


def _tools(raw: list[AnthropicTool]) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(raw):
        where = f"tools[{i}].input_schema"
        schema = f.object_schema(item["input_schema"], where)
        strict = bool(item.get("strict"))
        tools.append(Tool(item["name"], item.get("description"), schema, strict, where))
    return f.distinct_names(tools, "name")


_AUTO, _NONE = ToolChoice("auto"), ToolChoice("none")  # made once: most requests take one
_MODES: dict[str, Any] = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}


def _tool_choice(raw: AnthropicChoice | None, tools: tuple[Tool, ...]) -> tuple[ToolChoice, bool]:
    """`tool_choice` as a ToolChoice, and whether parallel calls are allowed."""
    if raw is None:
        return (_AUTO if tools else _NONE), True
    kind = raw["type"]
    name = raw.get("name")
    if kind == "tool" and name is None:
        raise InvalidRequest(
            '\'tool_choice.name\' is required with {"type": "tool"}: the tool to call.',
            param="tool_choice.name",
        )
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(
            f"'tool_choice' is {kind!r}, which asks for a tool call, but 'tools' is empty "
            "or missing.",
            param="tool_choice",
        )
    if kind == "tool" and name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"'tool_choice.name' is {name!r}, which is not one of the names in 'tools'.",
            param="tool_choice.name",
        )
    choice = ToolChoice(_MODES[kind], name if kind == "tool" else None)
    return choice, not raw.get("disable_parallel_tool_use")


def _output_format(data: MessagesBody) -> ResponseFormat:
    """`output_config.format` (or the beta's top-level `output_format`): a JSON schema, or text."""
    fmt, path = (data.get("output_config") or {}).get("format"), "output_config.format"
    if fmt is None:
        fmt, path = data.get("output_format"), "output_format"
    if fmt is None:
        return TEXT
    # Not strict: Anthropic's format has no such switch, and a keyword llguidance cannot
    # enforce (a zod record's propertyNames) is reported in a header rather than refused.
    return ResponseFormat("json_schema", schema=fmt["schema"], path=path)


def _thinking(raw: Any) -> bool:
    """Whether the client wants thinking blocks; budgets are Anthropic's and are ignored."""
    return isinstance(raw, dict) and raw.get("type") in THINKING_ON
