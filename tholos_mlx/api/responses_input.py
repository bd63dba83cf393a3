"""Responses `input`, declared: a string, or items tagged by `type`, to the internal conversation.

Messages (with or without `"type": "message"`), function and custom tool calls and their outputs
become turns; reasoning items are accepted and left out (chat templates drop past thinking
anyway); any other item type is refused by name. Items are many: TypedDicts, which pydantic
fills about twice as fast as models.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag
from typing_extensions import NotRequired, TypedDict

from tholos_mlx.api.fields import NonEmpty
from tholos_mlx.api.responses_custom import arguments as custom_arguments
from tholos_mlx.api.validation import (
    LIST_TAG,
    TEXT_TAG,
    Rule,
    refuse,
    reject,
    text_or_list,
    type_of,
)
from tholos_mlx.request import Message, Role, ToolCall

ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
}
INPUT_RULE = "a string, or an array of input items (messages, function_call, function_call_output)"
_PART_RULE = 'a part such as {"type": "input_text", "text": ...}'
_CONTENT_RULE = "a string or an array of text parts"


class TextPart(TypedDict):
    """`input_text` (what the user said) or `output_text` (what the assistant said)."""

    type: Literal["input_text", "output_text"]
    text: Annotated[str, Field(description="a string")]


class RefusalPart(TypedDict):
    """What an assistant refused with, sent back."""

    type: Literal["refusal"]
    refusal: Annotated[str, Field(description="a string")]


def _not_text(kind: str) -> str:
    raise refuse(
        f"is {kind!r}, but this server reads only text: 'input_text' and 'output_text' parts."
    )


class OtherPart(TypedDict):
    """A part of any other type (images, files, audio): refused by its type."""

    type: Annotated[str, AfterValidator(_not_text)]


_PART_TAGS = {"input_text": "<text>", "output_text": "<text>", "refusal": "<refusal>"}


def _part_kind(raw: Any) -> str | None:
    kind = type_of(raw)
    return None if kind is None else _PART_TAGS.get(kind, "<other>")


Part = Annotated[
    Annotated[TextPart, Tag("<text>")]
    | Annotated[RefusalPart, Tag("<refusal>")]
    | Annotated[OtherPart, Tag("<other>")],
    Discriminator(_part_kind, custom_error_type="wrong_type", custom_error_message="a part"),
    Rule(_PART_RULE),
]
Content = Annotated[
    Annotated[str, Tag(TEXT_TAG)] | Annotated[list[Part], Tag(LIST_TAG), Field(min_length=1)],
    Discriminator(text_or_list, custom_error_type="wrong_type", custom_error_message="content"),
]


class MessageItem(TypedDict):
    """A turn: `{"role", "content"}`, `"type": "message"` optional."""

    type: NotRequired[Literal["message"]]
    role: Annotated[
        Literal["user", "assistant", "system", "developer"],
        Field(description="one of 'user', 'assistant', 'system' or 'developer'"),
    ]
    content: Annotated[Content, Field(description=_CONTENT_RULE)]


class FunctionCallItem(TypedDict):
    """A function call the assistant made, in the history."""

    type: Literal["function_call"]
    call_id: NonEmpty
    name: NonEmpty
    arguments: Annotated[str, Field(description="a string of JSON")]


class CustomCallItem(TypedDict):
    """A custom tool's call, in the history: its free-text input."""

    type: Literal["custom_tool_call"]
    call_id: NonEmpty
    name: NonEmpty
    input: Annotated[str, Field(description="a string")]


class OutputItem(TypedDict):
    """What a function or custom tool call returned."""

    type: Literal["function_call_output", "custom_tool_call_output"]
    call_id: NonEmpty
    output: Annotated[Content, Field(description=_CONTENT_RULE)]


class ReasoningItem(TypedDict):
    """Past thinking, sent back: accepted, never replayed to the model."""

    type: Literal["reasoning"]


def _not_an_item(kind: str) -> str:
    raise refuse(
        f"is {kind!r}; this server takes messages, and function and custom tool calls and "
        "their outputs."
    )


class OtherItem(TypedDict):
    """An item of any other type (item_reference, computer_call...): refused by its type."""

    type: Annotated[str, AfterValidator(_not_an_item)]


def _untyped(_: Any) -> Any:
    raise reject("needs a 'role' (a message) or a 'type'; got neither.")


_ITEM_TAGS = {
    "message": "<message>",
    "function_call": "<function_call>",
    "custom_tool_call": "<custom_tool_call>",
    "function_call_output": "<output>",
    "custom_tool_call_output": "<output>",
    "reasoning": "<reasoning>",
}


def _item_kind(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type", "message" if "role" in raw else None)
    if not isinstance(kind, str):
        return "<untyped>"
    return _ITEM_TAGS.get(kind, "<other>")


Item = Annotated[
    Annotated[MessageItem, Tag("<message>")]
    | Annotated[FunctionCallItem, Tag("<function_call>")]
    | Annotated[CustomCallItem, Tag("<custom_tool_call>")]
    | Annotated[OutputItem, Tag("<output>")]
    | Annotated[ReasoningItem, Tag("<reasoning>")]
    | Annotated[OtherItem, Tag("<other>")]
    | Annotated[Any, AfterValidator(_untyped), Tag("<untyped>")],
    Discriminator(_item_kind, custom_error_type="wrong_type", custom_error_message="an item"),
    Rule('an object such as {"role": "user", "content": "..."}'),
]
Input = Annotated[
    Annotated[str, Tag(TEXT_TAG)] | Annotated[list[Item], Tag(LIST_TAG), Field(min_length=1)],
    Discriminator(text_or_list, custom_error_type="wrong_type", custom_error_message="input"),
    Field(description=INPUT_RULE),
]


def conversation(raw: str | list[Any]) -> tuple[Message, ...]:
    """The declared input as turns: a call joins the assistant turn before it."""
    if isinstance(raw, str):
        return (Message("user", raw),)
    messages: list[Message] = []
    for item in raw:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(Message(ROLES[item["role"]], _text(item["content"])))
        elif kind == "function_call":
            _add_call(messages, ToolCall(item["call_id"], item["name"], item["arguments"]))
        elif kind == "custom_tool_call":
            call = ToolCall(item["call_id"], item["name"], custom_arguments(item["input"]))
            _add_call(messages, call)
        elif kind != "reasoning":  # an output: past thinking is not replayed to the model
            messages.append(Message("tool", _text(item["output"]), tool_call_id=item["call_id"]))
    return tuple(messages)


def _text(content: str | list[Any]) -> str:
    """Content: a string, or its text and refusal parts joined."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] if "text" in p else p["refusal"] for p in content)


def _add_call(messages: list[Message], call: ToolCall) -> None:
    """A call joins the assistant turn before it (one turn: its text and its calls)."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        messages[-1] = replace(last, tool_calls=(*last.tool_calls, call))
    else:
        messages.append(Message("assistant", "", tool_calls=(call,)))


def named_results(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Tool results carry their function's name, found in the call they answer."""
    names: dict[str, str] = {}
    named = []
    for m in messages:
        names.update((c.id, c.name) for c in m.tool_calls)
        if m.role == "tool" and m.name is None and m.tool_call_id in names:
            m = replace(m, name=names[m.tool_call_id])
        named.append(m)
    return tuple(named)
