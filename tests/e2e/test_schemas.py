"""The SDKs' schemas against the real demo model in each dialect: few, short generations.

Every answer is shaped by the grammar, so each test checks the guarantee (JSON valid against
the schema less the keywords the header says were not enforced), never the wording.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests import server as srv
from tests.sdk_schemas import SDK_SCHEMAS
from tholos_mlx.schema_check import WARNINGS_HEADER

pytestmark = pytest.mark.e2e

GRADES = [{"role": "user", "content": "Grade Ada: math 9, art 7."}]
PERSON = [{"role": "user", "content": "Describe a person called Ada."}]


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


def without(schema: Any, keyword: str) -> Any:
    """The schema less one keyword everywhere: what the answer is held to when it is reported."""
    if isinstance(schema, dict):
        return {k: without(v, keyword) for k, v in schema.items() if k != keyword}
    if isinstance(schema, list):
        return [without(v, keyword) for v in schema]
    return schema


def post(served: srv.Server, path: str, body: dict[str, Any]) -> Any:
    with served.client(timeout=300) as c:
        return c.post(path, json={"temperature": 0, **body})


def test_a_forced_chat_call_to_a_zod_record_tool_validates_and_says_what_was_not_enforced(
    served: srv.Server,
) -> None:
    schema, _ = SDK_SCHEMAS["zod record with enum keys"]
    tool = {"type": "function", "function": {"name": "grade", "parameters": schema}}
    r = post(
        served,
        "/v1/chat/completions",
        {"messages": GRADES, "tools": [tool], "tool_choice": "required", "max_tokens": 80},
    )
    assert r.status_code == 200, r.text
    assert "propertyNames" in r.headers[WARNINGS_HEADER]
    choice = r.json()["choices"][0]
    arguments = choice["message"]["tool_calls"][0]["function"]["arguments"]
    if choice["finish_reason"] == "length":  # a record has no end a 135M model must reach
        assert arguments.startswith('{"scores":{'), arguments
    else:
        assert choice["finish_reason"] == "tool_calls", choice
        jsonschema.validate(json.loads(arguments), without(schema, "propertyNames"))


def test_an_anthropic_output_format_from_pydantic_validates(served: srv.Server) -> None:
    schema, _ = SDK_SCHEMAS["openai strict pydantic"]  # closed, as the SDKs' helpers send it
    r = post(
        served,
        "/v1/messages",
        {
            "messages": PERSON,
            "max_tokens": 60,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        },
    )
    assert r.status_code == 200, r.text
    assert WARNINGS_HEADER not in r.headers
    body = r.json()
    assert body["stop_reason"] == "end_turn", body["content"]
    jsonschema.validate(json.loads(body["content"][0]["text"]), schema)


def test_a_responses_text_format_with_zod_unions_validates(served: srv.Server) -> None:
    schema, _ = SDK_SCHEMAS["zod unions"]
    fmt = {"type": "json_schema", "name": "shape", "schema": schema, "strict": True}
    r = post(
        served,
        "/v1/responses",
        {"input": "Give a shape.", "text": {"format": fmt}, "max_output_tokens": 60},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed", body
    jsonschema.validate(json.loads(body["output"][0]["content"][0]["text"]), schema)
