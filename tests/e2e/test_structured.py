"""Structured output and tools, real demo model, real HTTP: JSON that parses and validates, calls that validate.

The 135M demo model cannot be trusted to write JSON or call functions on its own; every
answer here is shaped by the grammar, so each test checks the guarantee, never the wording.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests import server as srv

CITY = [{"role": "user", "content": "Describe Paris for a travel app."}]

SCHEMAS: dict[str, dict[str, Any]] = {
    "enum and integer range": {
        "type": "object",
        "properties": {
            "country": {"type": "string", "enum": ["France", "Japan", "Peru"]},
            "population_millions": {"type": "integer", "minimum": 1, "maximum": 40},
        },
        "required": ["country", "population_millions"],
        "additionalProperties": False,
    },
    "nested object": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "location": {
                "type": "object",
                "properties": {
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lon": {"type": "number", "minimum": -180, "maximum": 180},
                },
                "required": ["lat", "lon"],
                "additionalProperties": False,
            },
        },
        "required": ["city", "location"],
        "additionalProperties": False,
    },
    "array with min and max items": {
        "type": "object",
        "properties": {
            "sights": {
                "type": "array",
                "items": {"type": "string", "maxLength": 24},
                "minItems": 2,
                "maxItems": 3,
            }
        },
        "required": ["sights"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {"postcode": {"type": "string", "pattern": "^75[0-9]{3}$"}},
        "required": ["postcode"],
        "additionalProperties": False,
    },
    "boolean and non-ascii enum": {
        "type": "object",
        "properties": {
            "capital": {"type": "boolean"},
            "mood": {"type": "string", "enum": ["très bien", "ça va", "😀"]},
        },
        "required": ["capital", "mood"],
        "additionalProperties": False,
    },
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture
def sdk(served: srv.Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.v1, api_key=served.key, max_retries=0, timeout=300)


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }


def parameters(tool: dict[str, Any]) -> dict[str, Any]:
    return dict(tool["function"]["parameters"])


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_a_json_schema_answer_parses_and_validates(served: srv.Server, name: str) -> None:
    schema = SCHEMAS[name]
    r = served.chat(CITY, max_tokens=80, response_format=schema_format(schema))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # short answers end: no runaway spaces
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_a_stop_string_never_cuts_a_schema_answer_short(served: srv.Server) -> None:
    schema = SCHEMAS["pattern"]
    r = served.chat(CITY, max_tokens=40, stop=['"', "75"], response_format=schema_format(schema))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_json_object_gives_an_object_that_parses(served: srv.Server) -> None:
    ask = [{"role": "user", "content": "Reply in JSON: the capital of France."}]
    r = served.chat(ask, max_tokens=60, response_format={"type": "json_object"})
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:  # cut by max_tokens: still the start of an object, never prose
        assert choice["message"]["content"].startswith("{")


def test_sampling_at_temperature_one_stays_valid(served: srv.Server) -> None:
    schema = SCHEMAS["enum and integer range"]
    for seed in (1, 2, 3):
        r = served.chat(
            CITY, temperature=1, seed=seed, max_tokens=60, response_format=schema_format(schema)
        )
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_a_streamed_schema_answer_is_the_same_json_in_pieces(served: srv.Server) -> None:
    schema = SCHEMAS["pattern"]
    whole = served.chat(CITY, max_tokens=40, response_format=schema_format(schema)).json()
    body = {
        "messages": CITY,
        "temperature": 0,
        "max_tokens": 40,
        "stream": True,
        "response_format": schema_format(schema),
    }
    with served.client() as c:
        text = c.post("/v1/chat/completions", json=body).text
    chunks = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    pieces = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks)
    assert pieces == whole["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(pieces), schema)


class Trip(BaseModel):
    city: str = Field(max_length=20)
    days: int = Field(ge=1, le=14)
    season: Literal["spring", "summer", "autumn", "winter"]


def test_the_sdks_parse_helper_gets_a_pydantic_object(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model="",
        messages=[{"role": "user", "content": "Plan a short trip to Rome."}],
        response_format=Trip,
        temperature=0,
        max_tokens=60,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Trip)
    assert 1 <= message.parsed.days <= 14


@pytest.mark.parametrize(
    "schema,reason",
    [
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}},
                "required": ["a"],
            },
            "'a' is unsatisfiable",
        ),
        ({"type": "object", "not": {"required": ["b"]}}, "not"),
        ({"type": 5}, "type"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_a_400_naming_why(
    served: srv.Server, schema: dict[str, Any], reason: str
) -> None:
    r = served.chat(CITY, max_tokens=5, response_format=schema_format(schema))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", "response_format")
    assert reason in err["message"]


def test_a_required_call_names_a_listed_tool_with_valid_arguments(served: srv.Server) -> None:
    r = served.chat(ASK_WEATHER, max_tokens=120, tools=[WEATHER, TIME], tool_choice="required")
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    message = choice["message"]
    assert message["content"] is None
    assert message["tool_calls"]
    for call in message["tool_calls"]:
        assert call["type"] == "function" and call["id"].startswith("call_")
        tool = {"get_weather": WEATHER, "get_time": TIME}[call["function"]["name"]]
        jsonschema.validate(json.loads(call["function"]["arguments"]), parameters(tool))


def test_a_named_tool_and_no_parallel_calls_give_exactly_that_one_call(served: srv.Server) -> None:
    r = served.chat(
        ASK_WEATHER,
        max_tokens=80,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), parameters(TIME))


def test_a_second_calls_opening_cut_by_max_tokens_never_leaks_into_content(
    served: srv.Server,
) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER, TIME], "tool_choice": "required"}
    one = served.chat(ASK_WEATHER, max_tokens=120, parallel_tool_calls=False, **fields).json()
    whole = one["usage"]["completion_tokens"]  # the first call, its end marker included
    (first,) = one["choices"][0]["message"]["tool_calls"]
    for extra in (1, 2, 3, 4):  # the separator, then the next call's marker, token by token
        choice = served.chat(ASK_WEATHER, max_tokens=whole + extra, **fields).json()["choices"][0]
        message = choice["message"]
        assert message["content"] is None, (extra, message)
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
        assert calls[0] == (first["function"]["name"], first["function"]["arguments"])
        for name, arguments in calls:  # only whole calls: a cut one is left out
            tool = {"get_weather": WEATHER, "get_time": TIME}[name]
            jsonschema.validate(json.loads(arguments), parameters(tool))


def test_a_forced_call_cut_before_its_name_has_content_null_and_no_calls(
    served: srv.Server,
) -> None:
    r = served.chat(ASK_WEATHER, max_tokens=2, tools=[WEATHER], tool_choice="required")
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None and "tool_calls" not in choice["message"]


def test_tool_choice_none_answers_in_text(served: srv.Server) -> None:
    r = served.chat(ASK_WEATHER, max_tokens=12, tools=[WEATHER], tool_choice="none")
    message = r.json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"]


def test_a_streamed_call_reassembles_into_the_non_streamed_one(served: srv.Server) -> None:
    fields = {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    whole = served.chat(ASK_WEATHER, max_tokens=80, **fields).json()["choices"][0]
    body = {"messages": ASK_WEATHER, "temperature": 0, "max_tokens": 80, "stream": True, **fields}
    with served.client() as c:
        text = c.post("/v1/chat/completions", json=body).text
    chunks = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    calls = [piece for d in deltas for piece in d.get("tool_calls") or []]
    first = calls[0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather"
    assert all("id" not in piece and "name" not in piece["function"] for piece in calls[1:])
    arguments = "".join(piece["function"].get("arguments", "") for piece in calls)
    assert json.loads(arguments) == json.loads(
        whole["message"]["tool_calls"][0]["function"]["arguments"]
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_tool_round_trip_with_the_sdk(sdk: openai.OpenAI) -> None:
    first = sdk.chat.completions.create(
        model="",
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=80,
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(args, parameters(WEATHER))
    history = [
        *ASK_WEATHER,
        first.choices[0].message.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature_c": 21, "sky": "sunny"}),
        },
    ]
    second = sdk.chat.completions.create(
        model="",
        messages=history,
        tools=[WEATHER],
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type, list-item]
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    answer = second.choices[0].message
    assert answer.content or answer.tool_calls
    if answer.tool_calls:
        for again in answer.tool_calls:
            jsonschema.validate(json.loads(again.function.arguments), parameters(WEATHER))  # type: ignore[union-attr]
