"""GET /v1/responses/{id}/input_items: a stored response's input, in the SDK's pagination shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import LiveServer, live_server
from tholos_mlx.api.responses_items import input_items, page
from tholos_mlx.errors import InvalidRequest

INPUT: list[dict[str, Any]] = [
    {"role": "developer", "content": "Be brief."},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "user", "content": "Thanks."},
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "home") as s:
        yield s


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as c:
        yield c


def test_a_string_input_is_one_user_message_with_an_id() -> None:
    (item,) = input_items("Hello")
    assert item["id"].startswith("msg_")
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Hello"}],
    }


def test_each_item_keeps_what_was_sent_and_gets_an_id_of_its_kind() -> None:
    items = input_items(INPUT)
    assert [i["type"] for i in items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert items[2]["id"].startswith("fc_") and items[2]["call_id"] == "c1"
    assert items[4]["content"] == [
        {"type": "output_text", "text": "It is sunny.", "annotations": []}
    ]
    assert len({i["id"] for i in items}) == len(items)
    assert input_items([{"id": "msg_mine", "role": "user", "content": "x"}])[0]["id"] == "msg_mine"


def test_a_page_is_newest_first_by_default_and_after_and_limit_walk_the_rest() -> None:
    items = input_items(INPUT)
    ids = [i["id"] for i in items]
    first = page(items, {"limit": "4"})
    assert [i["id"] for i in first["data"]] == ids[::-1][:4]
    assert (first["object"], first["first_id"], first["last_id"], first["has_more"]) == (
        "list",
        ids[-1],
        ids[2],
        True,
    )
    rest = page(items, {"limit": "4", "after": first["last_id"]})
    assert [i["id"] for i in rest["data"]] == ids[1::-1] and rest["has_more"] is False
    assert [i["id"] for i in page(items, {"order": "asc"})["data"]] == ids
    empty = page((), {})
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "msg_nope"}, "after"),
    ],
)
def test_a_bad_query_is_a_400_naming_it(query: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        page(input_items(INPUT), query)
    assert caught.value.param == param


def test_the_sdk_lists_a_stored_responses_input_items_across_pages(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model="alpha", input=INPUT)  # type: ignore[arg-type]
    listed = list(sdk.responses.input_items.list(response.id, limit=2, order="asc"))
    assert [item.type for item in listed] == [i.get("type", "message") for i in INPUT]
    assert listed[2].type == "function_call" and listed[2].name == "get_weather"
    newest = sdk.responses.input_items.list(response.id)
    assert newest.data[0].type == "message" and newest.has_more is False
    assert newest.data[0].content[0].text == "Thanks."  # type: ignore[union-attr]


def test_input_items_of_an_unknown_or_unstored_response_are_404(
    server: LiveServer, sdk: openai.OpenAI
) -> None:
    unstored = sdk.responses.create(model="alpha", input="Hi", store=False)
    for response_id in ("resp_nope", unstored.id):
        with pytest.raises(openai.NotFoundError):
            sdk.responses.input_items.list(response_id)
    with server.client() as c:
        r = c.get(
            f"/v1/responses/{sdk.responses.create(model='alpha', input='Hi').id}/input_items?limit=0"
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_input_items_need_the_key(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/v1/responses/resp_x/input_items")
    assert r.status_code == 401
