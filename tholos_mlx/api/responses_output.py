"""The Responses API's answer: output items built from the engine's events, the streamed events
that build them, and the `response` object around them.

One `Output` serves both forms: a stream feeds it events as they come and sends what it returns;
a non-streamed answer feeds it the gathered answer and keeps only the final items. The engine's
reasoning becomes `reasoning` items (with `reasoning_text` content), text a `message` item, each
tool call a `function_call` item, in the order they arrive.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.responses_custom import input_so_far
from tholos_mlx.events import (
    Delta,
    Event,
    Finished,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.ids import hex_id
from tholos_mlx.request import Message, ResponseFormat, Tool, ToolCall, ToolChoice, Usage

Kind = Literal["message", "reasoning", "function_call", "custom_tool_call"]
CALLS = ("function_call", "custom_tool_call")
Status = Literal["in_progress", "completed", "incomplete"]
WireEvent = dict[str, Any]  # one streamed event, without its sequence_number

_ID_HEX_DIGITS = 50  # OpenAI's ids are a prefix and 50 hex digits


def new_id(prefix: str) -> str:
    """A fresh id shaped like OpenAI's: "resp_", "msg_", "fc_" or "rs_" and 50 hex digits."""
    return hex_id(prefix, _ID_HEX_DIGITS)


# -- the request's settings the response object repeats --


@dataclass(frozen=True)
class Echo:
    """What a response object says about the request that made it."""

    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice("none")
    text_format: ResponseFormat = ResponseFormat()
    metadata: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)  # function -> its namespace tool
    custom: dict[str, dict[str, Any]] = field(default_factory=dict)  # custom tools, as sent


def tool_object(tool: Tool) -> dict[str, Any]:
    """A function tool as the Responses API writes it (flat, not nested under "function")."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def tool_choice_object(choice: ToolChoice) -> str | dict[str, str]:
    """`tool_choice` as the Responses API writes it."""
    if choice.mode == "function":
        return {"type": "function", "name": choice.name or ""}
    return choice.mode


def format_object(fmt: ResponseFormat) -> dict[str, Any]:
    """`text.format` as the Responses API writes it (json_schema's fields at the same level)."""
    if fmt.kind == "json_schema":
        return {
            "type": "json_schema",
            "name": fmt.name or "response",
            "schema": fmt.schema or {},
            "strict": fmt.strict,
        }
    return {"type": fmt.kind}


def usage_object(usage: Usage) -> dict[str, Any]:
    """The Responses `usage` object (the prompt cache's tokens in input_tokens_details)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        # Thinking is not counted apart from the answer: the engine reports one total.
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def response_object(
    *,
    id: str,
    created_at: int,
    model: str,
    echo: Echo,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    incomplete: bool = False,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The `response` object: OpenAI's fields, in its order."""
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": echo.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": echo.store,
        "temperature": echo.temperature,
        "text": {"format": format_object(echo.text_format)},
        "tool_choice": tool_choice_object(echo.tool_choice),
        "tools": [echo.custom.get(t.name) or tool_object(t) for t in echo.tools],
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage_object(usage) if usage is not None else None,
        "user": None,
        "metadata": echo.metadata,
    }


# -- output items --


@dataclass
class _Item:
    kind: Kind
    index: int  # output_index
    id: str
    parts: list[str] = field(default_factory=list)  # text, reasoning or arguments so far
    call_id: str = ""
    name: str = ""
    namespace: str | None = None  # a call to a function of a `namespace` tool
    sent: int = 0  # a custom call's input characters streamed so far
    status: Status = "in_progress"

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def part(self, text: str) -> dict[str, Any]:
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def body(self, *, opening: bool = False) -> dict[str, Any]:
        """The item as the output lists it; `opening`: as first announced, with nothing in it."""
        if self.kind == "function_call":
            call = {
                "id": self.id,
                "type": "function_call",
                "status": self.status,
                "arguments": "" if opening else self.text,
                "call_id": self.call_id,
                "name": self.name,
            }
            if self.namespace is not None:  # as OpenAI names it: the function and its namespace
                call["namespace"] = self.namespace
            return call
        if self.kind == "custom_tool_call":
            custom = {
                "id": self.id,
                "type": "custom_tool_call",
                "status": self.status,
                "call_id": self.call_id,
                "name": self.name,
                "input": "" if opening else input_so_far(self.text),
            }
            if self.namespace is not None:
                custom["namespace"] = self.namespace
            return custom
        content = [] if opening else [self.part(self.text)]
        if self.kind == "reasoning":
            return {
                "id": self.id,
                "type": "reasoning",
                "status": self.status,
                "summary": [],
                "content": content,
            }
        return {
            "id": self.id,
            "type": "message",
            "status": self.status,
            "content": content,
            "role": "assistant",
        }


def _whole_call(item: _Item | None) -> bool:
    """Whether an item is a call whose arguments are whole JSON: the limit cut what came after."""
    if item is None or item.kind not in CALLS:
        return False
    try:
        orjson.loads(item.text)
    except orjson.JSONDecodeError:
        return False
    return True


class Output:
    """The output items of one answer, and the stream events that announce, fill and close them."""

    def __init__(
        self, namespaces: Mapping[str, str] | None = None, custom: Collection[str] = ()
    ) -> None:
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._calls: dict[int, _Item] = {}  # the engine's call index -> its item
        self._namespaces = namespaces or {}  # a function's namespace tool, where it has one
        self._custom = frozenset(custom)  # the names of custom tools: their calls' items differ

    def add(self, ev: Event) -> list[WireEvent]:
        """The stream events for one engine event (Started and exceptions are not output)."""
        if isinstance(ev, Delta):
            return self._text("message", ev.text)
        if isinstance(ev, ReasoningDelta):
            return self._text("reasoning", ev.text)
        if isinstance(ev, ToolCallStart):
            events = self._close()
            kind: Kind = "custom_tool_call" if ev.name in self._custom else "function_call"
            self._calls[ev.index] = self._start(kind, events, ev.id, ev.name)
            return events
        if isinstance(ev, ToolCallDelta):
            item = self._calls[ev.index]
            item.parts.append(ev.arguments)
            if item.kind == "custom_tool_call":
                return self._input_delta(item)
            return [
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item.id,
                    "output_index": item.index,
                    "delta": ev.arguments,
                }
            ]
        if isinstance(ev, Finished):
            return self.finish(ev)
        return []

    def finish(self, finished: Finished) -> list[WireEvent]:
        """Close what is open (cut by the token limit: incomplete); an answer with neither text
        nor a call still gets a message."""
        last: Status = "incomplete" if finished.finish_reason == "length" else "completed"
        events = self._close("completed" if _whole_call(self._open) else last)
        if not any(i.kind != "reasoning" for i in self._items):
            self._start("message", events)
            events += self._close(last)
        return events

    @property
    def items(self) -> list[dict[str, Any]]:
        """The output items as they stand."""
        return [i.body() for i in self._items]

    def turn(self) -> Message:
        """The assistant turn this output adds to the conversation (its thinking left out)."""
        text = "".join(i.text for i in self._items if i.kind == "message")
        calls = tuple(ToolCall(i.call_id, i.name, i.text) for i in self._items if i.kind in CALLS)
        return Message("assistant", text, tool_calls=calls)

    @classmethod
    def of(
        cls,
        answer: Gathered,
        namespaces: Mapping[str, str] | None = None,
        custom: Collection[str] = (),
    ) -> Output:
        """The output of a whole gathered answer: reasoning, then text, then calls."""
        assert answer.finished is not None
        out = cls(namespaces, custom)
        if answer.reasoning:
            out.add(ReasoningDelta(answer.reasoning))
        if answer.text:
            out.add(Delta(answer.text))
        for i, call in enumerate(answer.calls):
            out.add(ToolCallStart(i, call.id, call.name))
            out.add(ToolCallDelta(i, call.arguments))
        out.finish(answer.finished)
        return out

    # -- building --

    def _input_delta(self, item: _Item) -> list[WireEvent]:
        """A custom call's input as it grows, decoded from its JSON arguments."""
        text = input_so_far(item.text)
        delta, item.sent = text[item.sent :], len(text)
        if not delta:
            return []
        return [
            {
                "type": "response.custom_tool_call_input.delta",
                "item_id": item.id,
                "output_index": item.index,
                "delta": delta,
            }
        ]

    def _text(self, kind: Kind, text: str) -> list[WireEvent]:
        events: list[WireEvent] = []
        item = self._open
        if item is None or item.kind != kind:
            events += self._close()
            item = self._start(kind, events)
        item.parts.append(text)
        delta = (
            "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        )
        event: WireEvent = {
            "type": delta,
            "item_id": item.id,
            "output_index": item.index,
            "content_index": 0,
            "delta": text,
        }
        if kind == "message":
            event["logprobs"] = []
        events.append(event)
        return events

    def _start(
        self, kind: Kind, events: list[WireEvent], call_id: str = "", name: str = ""
    ) -> _Item:
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}.get(kind, "ctc")
        item = _Item(kind, len(self._items), new_id(prefix), call_id=call_id, name=name)
        item.namespace = self._namespaces.get(name) if kind in CALLS else None
        self._items.append(item)
        self._open = item
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": item.index,
                "item": item.body(opening=True),
            }
        )
        if kind not in CALLS:
            events.append(
                {
                    "type": "response.content_part.added",
                    "item_id": item.id,
                    "output_index": item.index,
                    "content_index": 0,
                    "part": item.part(""),
                }
            )
        return item

    def _close(self, status: Status = "completed") -> list[WireEvent]:
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status
        where = {"item_id": item.id, "output_index": item.index}
        events: list[WireEvent] = []
        if item.kind == "function_call":
            events.append(
                {"type": "response.function_call_arguments.done", **where, "arguments": item.text}
            )
        elif item.kind == "custom_tool_call":
            events += self._input_delta(item)
            given = input_so_far(item.text)
            events.append({"type": "response.custom_tool_call_input.done", **where, "input": given})
        else:
            done = (
                "response.output_text.done"
                if item.kind == "message"
                else "response.reasoning_text.done"
            )
            text_done: WireEvent = {"type": done, **where, "content_index": 0, "text": item.text}
            if item.kind == "message":
                text_done["logprobs"] = []
            events.append(text_done)
            events.append(
                {
                    "type": "response.content_part.done",
                    **where,
                    "content_index": 0,
                    "part": item.part(item.text),
                }
            )
        events.append(
            {"type": "response.output_item.done", "output_index": item.index, "item": item.body()}
        )
        return events
