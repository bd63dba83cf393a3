"""Tests for tholos_mlx.api.responses_output: output items, stream events, the response object."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.responses_output import Echo, Output, WireEvent, response_object
from tholos_mlx.events import (
    Delta,
    Event,
    Finished,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.request import Message, ResponseFormat, Tool, ToolCall, ToolChoice, Usage

EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=8)


def events_of(*evs: Event) -> tuple[Output, list[WireEvent]]:
    """Feed events to a fresh Output; every stream event it returned, in order."""
    out = Output()
    sent: list[WireEvent] = []
    for ev in evs:
        sent += out.add(ev)
    return out, sent


def validated(events: list[WireEvent]) -> list[str]:
    """Each event as the SDK's ResponseStreamEvent union reads it (numbered); their types."""
    for i, ev in enumerate(events):
        EVENT.validate_python({**ev, "sequence_number": i})
    return [ev["type"] for ev in events]


# -- the output --


def test_text_streams_as_a_message_item_in_openais_event_order() -> None:
    out, sent = events_of(Delta("Hel"), Delta("lo"), Finished("stop", USAGE))
    assert validated(sent) == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    item = out.items[0]
    assert sent[0]["item"] == {
        "id": item["id"],
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert item["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello"}
    ]
    assert [e["delta"] for e in sent[2:4]] == ["Hel", "lo"]
    assert sent[4]["text"] == "Hello" and sent[-1]["item"] == item
    assert all(e.get("item_id", item["id"]) == item["id"] for e in sent)
    assert {e["output_index"] for e in sent} == {0}


def test_reasoning_then_text_then_calls_are_separate_items_in_order() -> None:
    out, sent = events_of(
        ReasoningDelta("think"),
        Delta("Let me check."),
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"city": '),
        ToolCallDelta(0, '"Paris"}'),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(1, "{}"),
        Finished("tool_calls", USAGE),
    )
    kinds = [(i["type"], i["status"]) for i in out.items]
    assert kinds == [
        ("reasoning", "completed"),
        ("message", "completed"),
        ("function_call", "completed"),
        ("function_call", "completed"),
    ]
    reasoning, _, call_a, call_b = out.items
    assert reasoning["id"].startswith("rs_") and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think"}]
    assert call_a["id"].startswith("fc_")
    assert (call_a["call_id"], call_a["name"], call_a["arguments"]) == (
        "call_a",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert (call_b["call_id"], call_b["arguments"]) == ("call_b", "{}")
    types = validated(sent)
    assert types[:2] == ["response.output_item.added", "response.content_part.added"]
    assert "response.reasoning_text.delta" in types and "response.reasoning_text.done" in types
    call_events = [e for e in sent if e.get("output_index") == 2]
    assert [e["type"] for e in call_events] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert (
        call_events[0]["item"]["arguments"] == ""
        and call_events[3]["arguments"] == call_a["arguments"]
    )
    assert out.turn() == Message(
        "assistant",
        "Let me check.",
        tool_calls=(
            ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_b", "get_time", "{}"),
        ),
    )


def test_an_answer_cut_by_the_token_limit_leaves_its_last_item_incomplete() -> None:
    out, sent = events_of(ReasoningDelta("a"), Delta("b"), Finished("length", USAGE))
    assert [i["status"] for i in out.items] == ["completed", "incomplete"]
    assert sent[-1]["item"]["status"] == "incomplete"


def test_a_call_whose_arguments_are_whole_stays_complete_when_the_limit_cuts_after_it() -> None:
    whole, _ = events_of(
        ToolCallStart(0, "c", "f"), ToolCallDelta(0, '{"a": 1}'), Finished("length", USAGE)
    )
    cut, _ = events_of(
        ToolCallStart(0, "c", "f"), ToolCallDelta(0, '{"a": '), Finished("length", USAGE)
    )
    assert [i["status"] for i in whole.items] == ["completed"]
    assert [i["status"] for i in cut.items] == ["incomplete"]


def test_an_empty_answer_still_has_an_empty_message() -> None:
    out, sent = events_of(Finished("stop", USAGE))
    assert [i["type"] for i in out.items] == ["message"]
    assert out.items[0]["content"][0]["text"] == ""
    assert validated(sent)[0] == "response.output_item.added"


def test_a_gathered_answer_has_the_items_a_stream_of_it_builds() -> None:
    evs: list[Event] = [
        ReasoningDelta("hm"),
        Delta("Hi"),
        ToolCallStart(0, "call_a", "f"),
        ToolCallDelta(0, "{}"),
        Finished("tool_calls", USAGE),
    ]
    gathered = Gathered()
    for ev in evs:
        gathered.add(ev)
    streamed, _ = events_of(*evs)

    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "id"} for i in items]

    assert strip(Output.of(gathered).items) == strip(streamed.items)


def test_the_response_object_validates_as_the_sdks_response() -> None:
    out, _ = events_of(Delta("Paris"), ToolCallStart(0, "call_a", "f"), Finished("length", USAGE))
    echo = Echo(
        instructions="Be brief.",
        max_output_tokens=3,
        tools=(Tool("f", "does f", {"type": "object"}, strict=True),),
        tool_choice=ToolChoice("function", "f"),
        text_format=ResponseFormat("json_schema", {"type": "object"}, "answer", strict=True),
        metadata={"k": "v"},
        previous_response_id="resp_1",
    )
    obj = response_object(
        id="resp_x",
        created_at=1,
        model="m",
        echo=echo,
        status="incomplete",
        output=out.items,
        usage=USAGE,
        incomplete=True,
    )
    resp = Response.model_validate(obj)
    assert resp.output_text == "Paris"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.input_tokens_details.cached_tokens == 8
    assert resp.usage.total_tokens == 17
    assert obj["tool_choice"] == {"type": "function", "name": "f"}
    assert obj["text"] == {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "schema": {"type": "object"},
            "strict": True,
        }
    }
    assert obj["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": "does f",
            "parameters": {"type": "object"},
            "strict": True,
        }
    ]
    for choice in ("none", "auto", "required"):
        plain = response_object(
            id="resp_y",
            created_at=1,
            model="m",
            echo=Echo(tool_choice=ToolChoice(choice)),
            status="in_progress",
            output=[],
        )
        assert Response.model_validate(plain).tool_choice == choice
