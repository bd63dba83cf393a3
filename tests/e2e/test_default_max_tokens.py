"""End to end: `serve --default-max-tokens N` caps answers that name no limit, in every dialect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import server as srv

pytestmark = pytest.mark.e2e

CAP = 3
LONG = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


@pytest.fixture(scope="module")
def capped(demo_home: Path) -> Iterator[srv.Server]:
    with srv.running(demo_home, "--model", "fast", "--default-max-tokens", str(CAP)) as s:
        yield s


def test_a_chat_completion_without_max_tokens_stops_at_the_cap_with_length(
    capped: srv.Server,
) -> None:
    body = capped.chat(LONG).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == CAP


def test_a_chat_completion_naming_max_tokens_above_the_cap_gets_what_it_asked(
    capped: srv.Server,
) -> None:
    body = capped.chat(LONG, max_tokens=CAP + 4).json()
    assert body["usage"]["completion_tokens"] == CAP + 4


def test_a_streamed_chat_completion_without_max_tokens_ends_with_length(
    capped: srv.Server,
) -> None:
    with capped.client() as c:
        text = c.post(
            "/v1/chat/completions",
            json={
                "messages": LONG,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ).text
    assert '"finish_reason":"length"' in text.replace(" ", "")
    assert f'"completion_tokens":{CAP}' in text.replace(" ", "")


def test_a_response_without_max_output_tokens_is_incomplete_at_the_cap(
    capped: srv.Server,
) -> None:
    with capped.client() as c:
        body = c.post("/v1/responses", json={"input": LONG[0]["content"], "temperature": 0}).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == CAP


def test_an_anthropic_message_always_names_max_tokens_so_the_cap_never_cuts_it(
    capped: srv.Server,
) -> None:
    with capped.client() as c:
        body = c.post(
            "/v1/messages",
            json={"max_tokens": CAP + 4, "messages": LONG, "temperature": 0},
        ).json()
    assert body["usage"]["output_tokens"] == CAP + 4
    assert body["stop_reason"] == "max_tokens"
