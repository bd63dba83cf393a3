"""/v1/responses over real HTTP with the fake engine: shapes, streams, the store, errors, the queue.

The openai SDK's own `responses` client talks to the server here, and every object and event is
validated against the SDK's pydantic types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes import WAIT_S, LiveServer, Script, engine_held, live_server
from tholos_mlx.api.responses_store import ResponseStore
from tholos_mlx.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable
from tholos_mlx.events import Delta, ReasoningDelta, ToolCallDelta, ToolCallStart
from tholos_mlx.request import Message, ToolCall

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ERROR_KEYS = {"message", "type", "param", "code"}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
CALL_EVENTS = (
    ToolCallStart(0, "call_abc", "get_weather"),
    ToolCallDelta(0, '{"city": '),
    ToolCallDelta(0, '"Paris"}'),
)
TEXT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",  # one or more: a batch of engine pieces is one delta
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app with a FakeEngine (model `alpha` loaded) on a real port."""
    with live_server(tmp_path / "home") as s:
        yield s


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client that sends the right key."""
    with server.client() as c:
        yield c


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at the server, without retries."""
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as c:
        yield c


def error_of(r: httpx.Response, status: int, type_: str, code: str | None) -> dict[str, Any]:
    """Assert OpenAI's error shape, status, type and code; return the error object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    err: dict[str, Any] = body["error"]
    assert err["type"] == type_ and err["code"] == code and err["message"]
    return err


def named_events(body: str) -> list[dict[str, Any]]:
    """Every event of an SSE body: its `event:` name must equal its data's type; keepalives skipped."""
    assert body.endswith("\n\n"), body[-80:]
    events = []
    for frame in body[:-2].split("\n\n"):
        lines = [ln for ln in frame.split("\n") if not ln.startswith(":")]
        if not lines:
            continue
        name, data = lines
        assert name.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[len("data: ") :])
        assert event["type"] == name[len("event: ") :]
        events.append(event)
    return events


def validated(events: list[dict[str, Any]]) -> list[str]:
    """Check every event against the SDK's types and the numbering; return their types."""
    for event in events:
        EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [e["type"] for e in events]


def runs(types: list[str]) -> list[str]:
    """The types with repeats in a row told once (how many deltas depends on batching)."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def send(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    """POST /v1/responses with a client of its own (from another thread, in engine_held)."""
    with server.client() as c:
        return c.post("/v1/responses", json=body)


# -- the answer --


def test_a_response_has_openais_shape_and_validates_as_the_sdks_type(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(prompt_tokens=30, cached_tokens=20)
    r = client.post(
        "/v1/responses",
        json={
            "input": "Hello",
            "instructions": "Be kind.",
            "max_output_tokens": 50,
            "metadata": {"k": "v"},
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    resp = Response.model_validate(body)
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert (resp.status, resp.model, resp.output_text) == ("completed", "alpha", "Hello, world!")
    assert abs(resp.created_at - time.time()) < 3600 and body["completed_at"] >= body["created_at"]
    assert body["incomplete_details"] is None and body["error"] is None
    assert (body["instructions"], body["max_output_tokens"], body["metadata"]) == (
        "Be kind.",
        50,
        {"k": "v"},
    )
    assert (body["tools"], body["tool_choice"], body["text"]) == (
        [],
        "auto",  # OpenAI's default, tools or not
        {"format": {"type": "text"}},
    )
    [item] = body["output"]
    assert item["id"].startswith("msg_")
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello, world!"}
        ],
    }
    assert body["usage"] == {
        "input_tokens": 30,
        "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 34,
    }
    assert server.engine.requests[-1].messages == (
        Message("system", "Be kind."),
        Message("user", "Hello"),
    )
    assert server.engine.requests[-1].max_tokens == 50


def test_a_streamed_response_sends_openais_events_in_order_with_rising_sequence_numbers(
    client: httpx.Client,
) -> None:
    r = client.post("/v1/responses", json={"input": "Hello", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = named_events(r.text)
    assert runs(validated(events)) == TEXT_ORDER
    created, in_progress = events[0]["response"], events[1]["response"]
    done = events[-1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress"
    assert created["output"] == [] and created["usage"] is None
    assert created["id"] == done["id"] and done["status"] == "completed"
    assert (
        "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "Hello, world!"
    )
    item_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events if "item_id" in e} == {item_id}
    assert done["output"] == [events[-2]["item"]]
    assert (
        client.get(f"/v1/responses/{done['id']}").json() == done
    )  # what GET returns is what was sent


def test_the_sdks_stream_helper_accepts_the_stream_and_its_text_equals_the_whole_answer(
    sdk: openai.OpenAI,
) -> None:
    whole = sdk.responses.create(model="", input="Hello")
    with sdk.responses.stream(model="", input="Hello") as stream:
        deltas = [ev.delta for ev in stream if ev.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text == "Hello, world!"
    assert final.status == "completed" and final.id != whole.id
    raw = sdk.responses.create(model="", input="Hello", stream=True)
    assert runs([ev.type for ev in raw]) == TEXT_ORDER  # the SDK's own event types, no extra frames


def test_a_function_call_comes_back_as_a_function_call_item(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(events=CALL_EVENTS, finish_reason="tool_calls")
    r = client.post(
        "/v1/responses",
        json={"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"},
    )
    body = r.json()
    Response.model_validate(body)
    [call] = body["output"]
    assert call["id"].startswith("fc_")
    assert {k: v for k, v in call.items() if k != "id"} == {
        "type": "function_call",
        "status": "completed",
        "call_id": "call_abc",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert body["status"] == "completed" and body["tool_choice"] == "required"
    assert body["tools"] == [WEATHER]
    job = server.engine.requests[-1]
    assert job.tool_choice.mode == "required" and [t.name for t in job.tools] == ["get_weather"]


def test_a_streamed_function_call_sends_argument_deltas_then_done(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(events=(Delta("Sure."), *CALL_EVENTS), finish_reason="tool_calls")
    r = client.post("/v1/responses", json={"input": "Weather?", "tools": [WEATHER], "stream": True})
    events = named_events(r.text)
    types = validated(events)
    assert types[-6:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.index("response.output_item.done") < types.index(
        "response.function_call_arguments.delta"
    )
    added, first, second, done, item_done = events[-6:-1]
    assert added["output_index"] == 1 and added["item"]["arguments"] == ""
    assert (first["delta"], second["delta"], done["arguments"]) == (
        '{"city": ',
        '"Paris"}',
        '{"city": "Paris"}',
    )
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["message", "function_call"]


def test_a_function_call_round_trip_through_the_sdk_continues_the_stored_conversation(
    server: LiveServer, sdk: openai.OpenAI
) -> None:
    server.engine.scripts = [
        Script(events=CALL_EVENTS, finish_reason="tool_calls"),
        Script(pieces=("Sunny in Paris.",)),
    ]
    first = sdk.responses.create(
        model="",
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
    )
    [call] = [o for o in first.output if o.type == "function_call"]
    second = sdk.responses.create(
        model="",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Paris." and second.previous_response_id == first.id
    assert server.engine.requests[-1].messages == (
        Message("user", "Weather in Paris?"),
        Message(
            "assistant", "", tool_calls=(ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),)
        ),
        Message("tool", '{"sky": "sunny"}', tool_call_id="call_abc", name="get_weather"),
    )


def test_reasoning_becomes_a_reasoning_item_before_the_message(
    server: LiveServer, sdk: openai.OpenAI
) -> None:
    server.engine.script = Script(events=(ReasoningDelta("Capital of France..."), Delta("Paris")))
    resp = sdk.responses.create(model="", input="Capital of France?")
    assert [o.type for o in resp.output] == ["reasoning", "message"]
    assert resp.output_text == "Paris"
    with sdk.responses.stream(model="", input="Capital of France?") as stream:
        types = [ev.type for ev in stream]
    assert "response.reasoning_text.delta" in types and "response.reasoning_text.done" in types


def test_the_token_limit_makes_the_response_incomplete(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(pieces=("Par",), finish_reason="length")
    body = client.post("/v1/responses", json={"input": "Hi", "max_output_tokens": 1}).json()
    Response.model_validate(body)
    assert body["status"] == "incomplete" and body["completed_at"] is None
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    r = client.post("/v1/responses", json={"input": "Hi", "max_output_tokens": 1, "stream": True})
    events = named_events(r.text)
    assert validated(events)[-1] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


# -- the store --


def test_previous_response_id_continues_the_conversation_without_its_instructions(
    server: LiveServer, client: httpx.Client
) -> None:
    first = client.post("/v1/responses", json={"input": "Hi", "instructions": "Be terse."}).json()
    client.post("/v1/responses", json={"input": "And?", "previous_response_id": first["id"]})
    assert server.engine.requests[-1].messages == (
        Message("user", "Hi"),
        Message("assistant", "Hello, world!"),
        Message("user", "And?"),
    )


def test_a_streamed_response_is_stored_and_continued_like_a_whole_one(
    server: LiveServer, client: httpx.Client
) -> None:
    events = named_events(client.post("/v1/responses", json={"input": "Hi", "stream": True}).text)
    resp_id = events[-1]["response"]["id"]
    r = client.post(
        "/v1/responses", json={"input": "More", "previous_response_id": resp_id, "stream": True}
    )
    assert validated(named_events(r.text))[-1] == "response.completed"
    assert [m.content for m in server.engine.requests[-1].messages] == [
        "Hi",
        "Hello, world!",
        "More",
    ]


def test_an_unknown_previous_response_id_is_404_before_the_engine_runs(
    server: LiveServer, client: httpx.Client
) -> None:
    r = client.post("/v1/responses", json={"input": "Hi", "previous_response_id": "resp_nope"})
    err = error_of(r, 404, "invalid_request_error", "previous_response_not_found")
    assert err["param"] == "previous_response_id" and "resp_nope" in err["message"]
    assert server.engine.jobs == []


def test_get_returns_a_stored_response_and_delete_forgets_it(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    made = sdk.responses.create(model="", input="Hi")
    got = sdk.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    r = client.delete(f"/v1/responses/{made.id}")
    assert r.status_code == 200 and r.json() == {
        "id": made.id,
        "object": "response.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(made.id)
    other = sdk.responses.create(model="", input="Hi")
    sdk.responses.delete(other.id)  # the SDK accepts the deletion body
    assert client.get(f"/v1/responses/{other.id}").status_code == 404


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_unknown_id_is_404_in_openais_shape(client: httpx.Client, method: str) -> None:
    r = client.request(method, "/v1/responses/resp_unknown")
    err = error_of(r, 404, "invalid_request_error", "not_found")
    assert "resp_unknown" in err["message"]


def test_a_response_with_store_false_is_not_kept(server: LiveServer, client: httpx.Client) -> None:
    body = client.post("/v1/responses", json={"input": "Hi", "store": False}).json()
    assert body["store"] is False
    error_of(client.get(f"/v1/responses/{body['id']}"), 404, "invalid_request_error", "not_found")
    r = client.post("/v1/responses", json={"input": "Hi", "previous_response_id": body["id"]})
    error_of(r, 404, "invalid_request_error", "previous_response_not_found")
    assert len(server.app.ctx.responses) == 0


def test_the_store_keeps_only_the_most_recent_responses(
    server: LiveServer, client: httpx.Client
) -> None:
    assert isinstance(server.app.ctx.responses, ResponseStore)
    server.app.ctx.responses = ResponseStore(max_entries=2)
    ids = [client.post("/v1/responses", json={"input": str(i)}).json()["id"] for i in range(3)]
    assert client.get(f"/v1/responses/{ids[0]}").status_code == 404
    assert [client.get(f"/v1/responses/{i}").status_code for i in ids[1:]] == [200, 200]
    r = client.post("/v1/responses", json={"input": "x", "previous_response_id": ids[0]})
    error_of(r, 404, "invalid_request_error", "previous_response_not_found")


# -- errors --


@pytest.mark.parametrize(
    "kind", ["web_search", "web_search_preview", "file_search", "computer_use_preview", "mcp"]
)
def test_a_hosted_tool_is_left_out_and_forcing_it_is_a_400_naming_it(
    server: LiveServer, client: httpx.Client, kind: str
) -> None:
    r = client.post("/v1/responses", json={"input": "Hi", "tools": [WEATHER, {"type": kind}]})
    assert r.status_code == 200, r.text
    assert [t.name for t in server.engine.wait_jobs(1)[0].request.tools] == ["get_weather"]
    assert [t["name"] for t in r.json()["tools"]] == ["get_weather"]
    forced = {"input": "Hi", "tools": [WEATHER, {"type": kind}], "tool_choice": {"type": kind}}
    err = error_of(client.post("/v1/responses", json=forced), 400, "invalid_request_error", None)
    assert err["param"] == "tool_choice" and repr(kind) in err["message"]
    assert len(server.engine.jobs) == 1


def test_bad_json_and_a_missing_input_get_400_in_openais_shape(client: httpx.Client) -> None:
    r = client.post("/v1/responses", content=b"{oops", headers={"content-type": "application/json"})
    error_of(r, 400, "invalid_request_error", None)
    err = error_of(
        client.post("/v1/responses", json={"model": ""}), 400, "invalid_request_error", None
    )
    assert err["param"] == "input"


def test_the_engines_errors_name_this_apis_fields(server: LiveServer, client: httpx.Client) -> None:
    server.engine.scripts = [
        Script(
            error_before_start=InvalidRequest("Unsupported keyword 'if'.", param="response_format")
        ),
        Script(error_before_start=ContextLengthExceeded("Too long.", param="messages")),
    ]
    fmt = {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}
    r = client.post("/v1/responses", json={"input": "Hi", "text": fmt})
    assert error_of(r, 400, "invalid_request_error", None)["param"] == "text.format"
    r = client.post("/v1/responses", json={"input": "Hi", "stream": True})
    assert error_of(r, 400, "invalid_request_error", "context_length_exceeded")["param"] == "input"


def test_a_schema_that_cannot_constrain_is_refused_before_the_engine_sees_it(
    server: LiveServer, client: httpx.Client
) -> None:
    before = len(server.engine.requests)
    backref = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}
    fmt = {"format": {"type": "json_schema", "name": "a", "schema": backref}}
    r = client.post("/v1/responses", json={"input": "Hi", "text": fmt})
    err = error_of(r, 400, "invalid_request_error", None)
    assert err["param"] == "text.format" and "backreferences" in err["message"]
    assert err["message"].startswith("text.format:") and "response_format" not in err["message"]
    strict = {"format": {"type": "json_schema", "name": "a", "schema": {"not": {}}, "strict": True}}
    r = client.post("/v1/responses", json={"input": "Hi", "text": strict})
    err = error_of(r, 400, "invalid_request_error", None)
    assert err["param"] == "text.format" and '"not"' in err["message"]
    assert len(server.engine.requests) == before


def test_an_error_after_streaming_started_is_one_error_event_and_no_completion(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(
        pieces=("one", "two", "three"), error_after=2, error=RuntimeError("secret")
    )
    r = client.post("/v1/responses", json={"input": "Hi", "stream": True})
    assert r.status_code == 200
    events = named_events(r.text)
    types = validated(events)
    assert types[-1] == "error" and "response.completed" not in types
    assert (events[-1]["code"], events[-1]["param"]) == ("internal_error", None)
    assert "secret" not in r.text
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "onetwo"
    assert len(server.app.ctx.responses) == 0  # a failed response is not stored


def test_the_responses_routes_need_the_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as c:
        for method, path in [
            ("POST", "/v1/responses"),
            ("GET", "/v1/responses/x"),
            ("DELETE", "/v1/responses/x"),
        ]:
            r = c.request(method, path, json={"input": "Hi"})
            error_of(r, 401, "invalid_request_error", "invalid_api_key")
    assert server.engine.jobs == []


def test_a_full_queue_answers_429_with_retry_after_in_openais_shape(tmp_path: Path) -> None:
    waiting = [{"input": "1"}, {"input": "2", "stream": True}]
    with engine_held(tmp_path / "home", send, waiting, max_queue=1) as s:
        with s.client() as c:
            r = c.post("/v1/responses", json={"input": "3", "stream": True})
        err = error_of(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert "busy" in err["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert len(s.engine.jobs) == 2


def test_a_request_that_waits_past_the_queue_timeout_gets_503_with_retry_after(
    tmp_path: Path,
) -> None:
    first = [{"input": "1", "stream": True}]
    with engine_held(tmp_path / "home", send, first, queue_timeout=0.5) as s:
        with openai.OpenAI(base_url=f"{s.url}/v1", api_key=s.key, max_retries=0) as sdk:
            with pytest.raises(openai.InternalServerError) as info:
                sdk.responses.create(model="", input="2")
        r: Any = info.value.response  # the SDK's own httpx build: the same interface
        err = error_of(r, 503, "service_unavailable", "service_unavailable")
        assert err["param"] is None
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert len(s.engine.jobs) == 1


def test_a_stopped_engine_mid_stream_is_an_error_event(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(
        pieces=("a", "b"), error_after=1, error=ServiceUnavailable("Stopped.")
    )
    events = named_events(client.post("/v1/responses", json={"input": "Hi", "stream": True}).text)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "service_unavailable"


# -- what Codex sends --

SPAWN: dict[str, Any] = {
    "type": "function",
    "name": "spawn_agent",
    "description": "Start a sub-agent.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"task": {"type": "string"}},
        "required": ["task"],
        "additionalProperties": False,
    },
}
MULTI_AGENT = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools for spawning and managing sub-agents.",
    "tools": [SPAWN],
}
SPAWN_EVENTS = (ToolCallStart(0, "call_ns1", "spawn_agent"), ToolCallDelta(0, '{"task":"x"}'))


def codex_body(**fields: Any) -> dict[str, Any]:
    """A turn shaped as Codex 0.171 sends it (its fields beside input and tools)."""
    return {
        "model": "alpha",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Be a coding agent."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello."}],
            },
        ],
        "tools": [WEATHER, MULTI_AGENT, {"type": "web_search", "external_web_access": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "01a24a44-3d00-7143-b924-d5a6aabb88e2",
        "client_metadata": {"x-codex-installation-id": "c7be3a8f"},
        "text": {"verbosity": "low"},
        **fields,
    }


def test_a_call_to_a_namespaced_function_names_it_with_its_namespace_as_openai_does(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.scripts = [Script(events=SPAWN_EVENTS, finish_reason="tool_calls")] * 2
    r = client.post("/v1/responses", json=codex_body())
    assert r.status_code == 200, r.text
    (call,) = r.json()["output"]
    assert (call["type"], call["name"], call["namespace"]) == (
        "function_call",
        "spawn_agent",
        "multi_agent_v1",
    )
    Response.model_validate(r.json())
    offered = server.engine.wait_jobs(1)[0].request.tools
    assert [t.name for t in offered] == ["get_weather", "spawn_agent"]
    events = named_events(client.post("/v1/responses", json=codex_body(stream=True)).text)
    validated(events)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert added[0]["namespace"] == done[0]["namespace"] == "multi_agent_v1"
    assert len(server.app.ctx.responses) == 0  # store: false


def test_codexs_next_turn_sends_the_namespaced_call_and_its_output_back(
    server: LiveServer, client: httpx.Client
) -> None:
    call = {
        "type": "function_call",
        "name": "spawn_agent",
        "namespace": "multi_agent_v1",
        "arguments": '{"task":"x"}',
        "call_id": "call_ns1",
    }
    output = {"type": "function_call_output", "call_id": "call_ns1", "output": "agent a1 started"}
    body = codex_body()
    body["input"] = [*body["input"], call, output]
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    messages = server.engine.wait_jobs(1)[0].request.messages
    assert messages[-2].tool_calls == (ToolCall("call_ns1", "spawn_agent", '{"task":"x"}'),)
    assert (messages[-1].role, messages[-1].name) == ("tool", "spawn_agent")


def test_the_sdk_sends_a_namespace_tool_through_extra_body(
    server: LiveServer, sdk: openai.OpenAI
) -> None:
    server.engine.scripts = [Script(events=SPAWN_EVENTS, finish_reason="tool_calls")]
    response = sdk.responses.create(
        model="alpha",
        input="Start an agent.",
        tools=[{"type": "web_search"}],
        extra_body={"tools": [MULTI_AGENT, {"type": "web_search"}], "client_metadata": {"a": "b"}},
    )
    (item,) = response.output
    assert item.type == "function_call" and item.name == "spawn_agent"
    assert getattr(item, "namespace", None) == "multi_agent_v1"
