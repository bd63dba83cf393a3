"""What the SDKs' schemas get in every dialect, over real HTTP with the fake engine (issue 19).

Tools in all three dialects and each dialect's format field (`response_format`, `text.format`,
`output_config.format`): accepted, the keywords not enforced named in `x-tholos-schema-warnings`;
refusals name the dialect's own path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes import LiveServer, live_server
from tests.sdk_schemas import SDK_SCHEMAS, ZOD_RECORD
from tholos_mlx.schema_check import WARNINGS_HEADER

BACKREF = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}
OPEN = {"type": "object", "properties": {"city": {"type": "string"}}}

Body = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


def chat_tool(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    function = {"name": "f", "parameters": schema, **extra}
    return "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": function}],
    }


def chat_format(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    spec = {"name": "answer", "schema": schema, **extra}
    return "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hi"}],
        "response_format": {"type": "json_schema", "json_schema": spec},
    }


def responses_tool(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    tool = {"type": "function", "name": "f", "parameters": schema, **extra}
    return "/v1/responses", {"input": "Hi", "tools": [tool]}


def responses_format(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    fmt = {"type": "json_schema", "name": "answer", "schema": schema, **extra}
    return "/v1/responses", {"input": "Hi", "text": {"format": fmt}}


def messages_tool(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"name": "f", "input_schema": schema, **extra}],
    }


def messages_format(schema: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }


WHERE: dict[str, tuple[Body, str]] = {
    "chat tools": (chat_tool, "tools[0].function.parameters"),
    "chat response_format": (chat_format, "response_format"),
    "responses tools": (responses_tool, "tools[0].parameters"),
    "responses text.format": (responses_format, "text.format"),
    "messages tools": (messages_tool, "tools[0].input_schema"),
    "messages output_config.format": (messages_format, "output_config.format"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("home")) as s:
        yield s


def send(server: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    with server.client(headers={"x-api-key": server.key}) as c:
        return c.post(path, json=body)


def message_of(r: httpx.Response) -> str:
    """The error message in either error shape (OpenAI's or Anthropic's)."""
    return str(r.json()["error"]["message"])


@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("name", list(SDK_SCHEMAS))
def test_every_sdk_schema_is_served_in_every_dialect_and_gaps_named_in_a_header(
    server: LiveServer, name: str, where: str
) -> None:
    schema, unenforced = SDK_SCHEMAS[name]
    build, path = WHERE[where]
    before = len(server.engine.jobs)
    r = send(server, *build(schema))
    assert r.status_code == 200, r.text
    assert len(server.engine.wait_jobs(before + 1)) == before + 1
    warning = r.headers.get(WARNINGS_HEADER)
    if unenforced:
        assert warning is not None and warning.startswith(f"{path}: ")
        assert all(k in warning for k in unenforced) and "not enforced" in warning
    else:
        assert warning is None


@pytest.mark.parametrize("where", list(WHERE))
def test_a_streamed_answer_carries_the_warnings_header_too(server: LiveServer, where: str) -> None:
    build, path = WHERE[where]
    url, body = build(ZOD_RECORD)
    r = send(server, url, {**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers[WARNINGS_HEADER].startswith(f"{path}: ")


@pytest.mark.parametrize("where", list(WHERE))
def test_a_schema_that_cannot_constrain_is_refused_naming_the_dialects_own_path(
    server: LiveServer, where: str
) -> None:
    build, path = WHERE[where]
    before = len(server.engine.jobs)
    r = send(server, *build(BACKREF))
    assert r.status_code == 400, r.text
    message = message_of(r)
    assert message.startswith(path) and "backreferences" in message
    if "function" not in path:
        assert "function.parameters" not in message
    if "response_format" not in path:
        assert "response_format" not in message
    if "error" in r.json() and "param" in r.json()["error"]:
        assert r.json()["error"]["param"] == path
    assert len(server.engine.jobs) == before


@pytest.mark.parametrize(
    "where", ["chat tools", "chat response_format", "responses tools", "responses text.format"]
)
def test_strict_refuses_an_open_object_and_a_keyword_it_cannot_enforce(
    server: LiveServer, where: str
) -> None:
    build, path = WHERE[where]
    r = send(server, *build(OPEN, strict=True))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == path
    assert error["message"].startswith("Invalid schema for ")
    assert (
        "In context=(), 'additionalProperties' is required to be supplied and to be false."
        in (error["message"])
    )
    r = send(server, *build(ZOD_RECORD, strict=True))
    assert r.status_code == 400 and "propertyNames" in message_of(r)


def test_an_anthropic_strict_tool_is_held_to_the_same_rules(server: LiveServer) -> None:
    r = send(server, *messages_tool(ZOD_RECORD, strict=True))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert message_of(r).startswith("tools[0].input_schema") and "propertyNames" in message_of(r)
    r = send(server, *messages_tool(OPEN, strict=True))
    assert r.status_code == 400 and "'additionalProperties' is required" in message_of(r)


def test_the_openai_sdk_sends_a_zod_record_and_reads_the_warning(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as client:
        sdk_calls_openai(client)


def sdk_calls_openai(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="alpha",
        input="Hi",
        tools=[{"type": "function", "name": "task", "parameters": ZOD_RECORD, "strict": False}],
        extra_body={"text": {"verbosity": "low"}},
    )
    assert "propertyNames" in raw.headers[WARNINGS_HEADER]
    assert raw.parse().output_text == "Hello, world!"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": "Hi"}],
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": OPEN, "strict": True}}
            ],
        )
    assert caught.value.code == "invalid_function_parameters"


def test_the_anthropic_sdk_sends_claude_codes_task_schema(server: LiveServer) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as client:
        sdk_calls_anthropic(client)


def sdk_calls_anthropic(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="alpha",
        max_tokens=16,
        messages=[{"role": "user", "content": "Hi"}],
        tools=[{"name": "TaskCreate", "input_schema": ZOD_RECORD}],
        extra_body={"output_config": {"effort": "low"}},
    )
    assert raw.headers[WARNINGS_HEADER].startswith("tools[0].input_schema: ")
    assert raw.parse().content[0].type == "text"
