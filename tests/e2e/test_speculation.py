"""End to end: speculative decoding on the real demo model changes no greedy answer, only the speed.

One server with `--speculative off`, then one with the default (ngram): the same requests,
across the dialects, streamed and not, with a stop string and a JSON schema, must give the
same bytes. The timing lines say what was drafted; a prediction that is the answer is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import server as srv
from tests.conftest import run_cli
from tholos_mlx import timings

CODE = "def area(w, h):\n    return w * h\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n"
COPY = [
    {
        "role": "user",
        "content": f"Here is a file:\n{CODE}\nRepeat the file exactly, with no other text.",
    }
]
SHORT = [{"role": "user", "content": "Name three colours, comma separated."}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "colours",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
            "required": ["colours"],
            "additionalProperties": False,
        },
    },
}
Case = Callable[[srv.Server], str]
TOKENS = 32  # past the stop string and well into the file: enough to draft from the prompt


def chat(messages: list[dict[str, str]] = COPY, **fields: Any) -> Case:
    def run(server: srv.Server) -> str:
        r = server.chat(messages, max_tokens=TOKENS, **fields)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    return run


def chat_streamed(server: srv.Server) -> str:
    body = {"messages": COPY, "temperature": 0, "max_tokens": TOKENS, "stream": True}
    text = []
    with server.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text.append(choice["delta"].get("content") or "")
    return "".join(text)


def anthropic(server: srv.Server) -> str:
    body = {"messages": COPY, "max_tokens": TOKENS, "temperature": 0}
    with server.client() as c:
        r = c.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    return "".join(b.get("text", "") for b in r.json()["content"])


def responses(server: srv.Server) -> str:
    body = {"input": COPY[0]["content"], "max_output_tokens": TOKENS, "temperature": 0}
    with server.client() as c:
        r = c.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    return "".join(
        p["text"] for item in r.json()["output"] for p in item.get("content", []) if "text" in p
    )


CASES: dict[str, Case] = {
    "chat": chat(),
    "chat streamed": chat_streamed,
    "chat with a stop string": chat(stop=["perimeter"]),
    "chat short": chat(messages=SHORT),
    "chat json schema": chat(messages=SHORT, response_format=SCHEMA),
    "anthropic": anthropic,
    "responses": responses,
}


def answers(home: Path, *flags: str) -> tuple[dict[str, str], str, dict[str, Any]]:
    """Every case's answer from one server, its log, and its /health."""
    with srv.running(home, "--model", "fast", "--prompt-cache-mb", "0", *flags) as s:
        with s.client() as c:
            health = c.get("/health").json()
        got = {name: case(s) for name, case in CASES.items()}
        return got, s.log_text(), health


@pytest.fixture(scope="module")
def off(demo_home: Path) -> tuple[dict[str, str], str, dict[str, Any]]:
    return answers(demo_home, "--speculative", "off")


@pytest.fixture(scope="module")
def on(demo_home: Path) -> Iterator[tuple[dict[str, str], str, dict[str, Any]]]:
    yield answers(demo_home)


def drafts(log: str) -> list[tuple[int, int]]:
    """(drafted, accepted) of every timing line in the log."""
    out = []
    for line in log.splitlines():
        figures = timings.parse(line)
        if figures is not None and figures.get("drafted") is not None:
            out.append((int(figures["drafted"] or 0), int(figures["accepted"] or 0)))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_answers_are_byte_identical_with_speculation_on_and_off(
    on: tuple[dict[str, str], str, dict[str, Any]],
    off: tuple[dict[str, str], str, dict[str, Any]],
    case: str,
) -> None:
    assert on[0][case] == off[0][case]
    assert on[0][case].strip()


def test_health_says_which_speculation_mode_is_on(
    on: tuple[dict[str, str], str, dict[str, Any]],
    off: tuple[dict[str, str], str, dict[str, Any]],
) -> None:
    assert on[2]["speculative"] == "ngram" and off[2]["speculative"] == "off"


def test_the_timing_lines_say_what_was_drafted_and_kept(
    on: tuple[dict[str, str], str, dict[str, Any]],
    off: tuple[dict[str, str], str, dict[str, Any]],
) -> None:
    assert drafts(off[1]) == []  # not speculated: no counts at all
    counted = drafts(on[1])
    assert len(counted) == len(CASES)
    assert sum(a for _, a in counted) > 0, "a file repeated back is drafted from the prompt"
    assert all(a <= d for d, a in counted)


def test_a_prediction_that_is_the_answer_is_accepted_and_changes_nothing(
    demo_server: srv.Server, off: tuple[dict[str, str], str, dict[str, Any]]
) -> None:
    expected = off[0]["chat"]
    prediction = {"type": "content", "content": expected}
    r = demo_server.chat(COPY, max_tokens=TOKENS, prediction=prediction)
    plain = demo_server.chat(COPY, max_tokens=TOKENS)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected
    details = r.json()["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] >= r.json()["usage"]["completion_tokens"] - 2
    assert details["rejected_prediction_tokens"] <= 2
    assert plain.json()["usage"]["completion_tokens_details"] == {
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }


def test_a_draft_model_with_the_same_tokenizer_drafts_and_changes_nothing(
    demo_home: Path, off: tuple[dict[str, str], str, dict[str, Any]]
) -> None:
    # The demo model drafting for itself: the simplest draft model with the same tokenizer.
    flags = ("--speculative", "draft", "--draft-model", "fast")
    with srv.running(demo_home, "--model", "fast", "--prompt-cache-mb", "0", *flags) as s:
        with s.client() as c:
            assert c.get("/health").json()["speculative"] == "draft"
        assert CASES["chat"](s) == off[0]["chat"]
        log = s.log_text()
    assert "loaded draft model smollm2-135m" in log
    ((drafted, accepted),) = drafts(log)
    assert drafted > 0 and accepted > 0


def test_speculative_draft_without_a_draft_model_is_refused_in_one_line(demo_home: Path) -> None:
    out = run_cli(
        "serve", "--home", demo_home, "--port", str(srv.free_port()), "--speculative", "draft"
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "--draft-model" in out.stderr


def test_a_draft_model_that_is_not_installed_is_refused_in_one_line(demo_home: Path) -> None:
    out = run_cli(
        "serve",
        "--home",
        demo_home,
        "--port",
        str(srv.free_port()),
        "--speculative",
        "draft",
        "--draft-model",
        "nonesuch",
    )
    assert out.returncode == 2
    assert "--draft-model nonesuch: no such model" in out.stderr
