"""End to end: /v1/responses on the real `tholos-mlx serve` with the demo model, through the openai SDK."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.responses import FunctionToolParam, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests import server as srv
from tests.conftest import DEMO_ID

pytestmark = pytest.mark.e2e

FRANCE = "What is the capital of France? Answer in one word."
EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture(scope="module")
def sdk(served: srv.Server) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at the server."""
    with openai.OpenAI(base_url=served.v1, api_key=served.key, max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def paris(sdk: openai.OpenAI) -> Response:
    """The greedy answer to the France question, stored on the server."""
    return sdk.responses.create(model="", input=FRANCE, temperature=0, max_output_tokens=12)


def test_responses_create_answers_paris_in_openais_shape(
    served: srv.Server, paris: Response
) -> None:
    assert "Paris" in paris.output_text
    assert paris.id.startswith("resp_") and paris.model == DEMO_ID
    assert paris.status == "completed" and paris.incomplete_details is None
    with served.client() as c:
        stored = c.get(f"/v1/responses/{paris.id}").json()
    Response.model_validate(stored)  # every field the SDK's type requires, strictly
    assert stored["output"] == [o.model_dump(mode="json", exclude_none=True) for o in paris.output]
    usage = paris.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 12
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_a_streamed_response_has_the_same_text_and_openais_events_in_order(
    served: srv.Server, sdk: openai.OpenAI, paris: Response
) -> None:
    with sdk.responses.stream(
        model="", input=FRANCE, temperature=0, max_output_tokens=12
    ) as stream:
        deltas = [ev.delta for ev in stream if ev.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == paris.output_text

    body = {"input": FRANCE, "temperature": 0, "max_output_tokens": 12, "stream": True}
    with served.client() as c:
        r = c.post("/v1/responses", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f.startswith("event: ")]
    events = [json.loads(f.split("\ndata: ", 1)[1]) for f in frames]
    for frame, event in zip(frames, events):
        assert frame.startswith(f"event: {event['type']}\n")
        EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    deltas_at = [i for i, t in enumerate(types) if t == "response.output_text.delta"]
    assert deltas_at == list(range(deltas_at[0], deltas_at[-1] + 1))  # one run of deltas
    assert [t for i, t in enumerate(types) if i not in deltas_at[1:]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == paris.output_text


def test_a_second_turn_via_previous_response_id_reads_the_first_from_the_prompt_cache(
    served: srv.Server, sdk: openai.OpenAI, paris: Response
) -> None:
    follow = sdk.responses.create(
        model="",
        previous_response_id=paris.id,
        input="And of Italy?",
        temperature=0,
        max_output_tokens=8,
    )
    assert follow.previous_response_id == paris.id
    assert follow.usage is not None and paris.usage is not None
    assert follow.usage.input_tokens > paris.usage.input_tokens  # the first turn is in the prompt
    assert follow.usage.input_tokens_details.cached_tokens > 0


def test_max_output_tokens_3_leaves_the_response_incomplete(sdk: openai.OpenAI) -> None:
    resp = sdk.responses.create(
        model="", input="Tell me a long story about a dragon.", temperature=0, max_output_tokens=3
    )
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 3


def test_a_json_schema_format_gives_json_that_validates(sdk: openai.OpenAI) -> None:
    resp = sdk.responses.create(
        model="",
        input="Name a city and its country as JSON.",
        temperature=0,
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}},
    )
    assert resp.status == "completed", resp.output_text
    jsonschema.validate(json.loads(resp.output_text), CITY)


def test_a_required_function_call_round_trips_to_a_text_answer(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(
        model="",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,  # one call: left free, the demo model calls again and again
        temperature=0,
        max_output_tokens=40,
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and first.status == "completed", first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    second = sdk.responses.create(
        model="",
        previous_response_id=first.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"sky": "sunny", "celsius": 21}),
            }
        ],
        temperature=0,
        max_output_tokens=16,
    )
    assert [o.type for o in second.output] == ["message"]
    assert second.output_text.strip()


def test_a_forced_custom_tool_gets_input_its_regex_allows_and_codex_tools_are_served(
    sdk: openai.OpenAI,
) -> None:
    postcode = {
        "type": "custom",
        "name": "postcode",
        "description": "A Paris postcode.",
        "format": {"type": "grammar", "syntax": "regex", "definition": "75[0-9]{3}"},
    }
    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}],
    }
    response = sdk.responses.create(
        model="",
        input="Give the postcode of the Louvre.",
        temperature=0,
        max_output_tokens=40,
        tools=[postcode, {"type": "web_search"}],  # type: ignore[list-item]
        tool_choice={"type": "custom", "name": "postcode"},
        extra_body={"tools": [postcode, namespace, {"type": "web_search"}], "store": False},
    )
    (call,) = response.output
    assert call.type == "custom_tool_call" and call.name == "postcode"
    assert re.fullmatch("75[0-9]{3}", call.input), call.input


def test_a_forced_custom_tool_gets_input_its_lark_grammar_parses_quotes_and_newline_included(
    sdk: openai.OpenAI,
) -> None:
    said = {
        "type": "custom",
        "name": "say",
        "description": "Say one short word, quoted, on a line of its own.",
        "format": {
            "type": "grammar",
            "syntax": "lark",
            "definition": 'start: "say " QUOTED LF\nQUOTED: "\\"" /[a-z]{1,8}/ "\\""\n'
            "%import common.LF",
        },
    }
    response = sdk.responses.create(
        model="",
        input="Say hello.",
        temperature=0,
        max_output_tokens=40,
        tools=[said],  # type: ignore[list-item]
        tool_choice={"type": "custom", "name": "say"},
        store=False,
    )
    (call,) = response.output
    assert call.type == "custom_tool_call" and call.name == "say"
    assert re.fullmatch(r'say "[a-z]{1,8}"\n', call.input), call.input
