"""End to end: the prompt cache reuses shared prefixes, says so in usage, and never changes answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import server as srv

SYSTEM = {
    "role": "system",
    "content": "You are a terse geography tutor. Answer every question with a single word, "
    "the name asked for, and nothing else. Never explain.",
}


def ask(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def served(demo_home: Path) -> Iterator[srv.Server]:
    """A server with the default prompt cache."""
    with srv.running(demo_home, "--model", "fast") as s:
        yield s


def complete(server: srv.Server, messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    r = server.chat(messages, max_tokens=fields.pop("max_tokens", 8), **fields)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def cached(resp: dict[str, Any]) -> int:
    return int(resp["usage"]["prompt_tokens_details"]["cached_tokens"])


def text(resp: dict[str, Any]) -> str:
    return str(resp["choices"][0]["message"]["content"])


def test_a_repeated_prompt_hits_the_cache_and_gives_the_same_greedy_text(
    served: srv.Server,
) -> None:
    question = ask("What is the capital of Italy?")
    cold = complete(served, question)
    warm = complete(served, question)
    assert cached(cold) == 0
    assert (
        cached(warm) == warm["usage"]["prompt_tokens"] - 1
    )  # all but the token that yields logits
    assert text(warm) == text(cold)

    body = {
        "messages": question,
        "temperature": 0,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with served.client() as c:
        events = [
            ln[6:]
            for ln in c.post("/v1/chat/completions", json=body).text.split("\n")
            if ln.startswith("data: ")
        ]
    usage = json.loads(events[-2])["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    streamed = "".join(
        json.loads(e)["choices"][0]["delta"].get("content", "")
        for e in events[:-2]
        if json.loads(e)["choices"]
    )
    assert streamed == text(cold)


def test_a_second_turn_reuses_the_whole_first_prompt_and_its_answer(served: srv.Server) -> None:
    first_turn = ask("What is the capital of Spain?")
    first = complete(served, first_turn, max_tokens=12)
    assert first["choices"][0]["finish_reason"] == "stop"
    second_turn = first_turn + [
        {"role": "assistant", "content": text(first)},
        {"role": "user", "content": "And of Portugal?"},
    ]
    second = complete(served, second_turn)
    reused = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert cached(second) >= reused


def test_interleaved_prompts_never_corrupt_each_others_cache(served: srv.Server) -> None:
    a = ask("What is the capital of Japan?")
    b = ask("What is the capital of Egypt?")
    cold_a, cold_b = complete(served, a), complete(served, b)
    assert cached(cold_b) > 0  # the shared system prompt came from a's entry
    warm_a, warm_b = complete(served, a), complete(served, b)
    assert cached(warm_a) == warm_a["usage"]["prompt_tokens"] - 1
    assert cached(warm_b) == warm_b["usage"]["prompt_tokens"] - 1
    assert (text(warm_a), text(warm_b)) == (text(cold_a), text(cold_b))


def test_entries_beyond_the_byte_budget_are_evicted_oldest_first(demo_home: Path) -> None:
    # One entry fits in 20 MiB, two do not: on the CPU the demo's float32 cache holds 45 KiB a
    # token, and an entry has room for 256 tokens (11.25 MiB) or, grown from a copied prefix,
    # for that prefix and 256 more (about 12.3 MiB).
    with srv.running(demo_home, "--model", "fast", "--prompt-cache-mb", "20") as small:
        first = [{"role": "user", "content": "Apples are red."}]
        complete(small, first, max_tokens=2)
        others = [
            complete(small, [{"role": "user", "content": other}], max_tokens=2)
            for other in ("Bananas are yellow.", "Cherries are dark.")
        ]
        again = complete(small, first, max_tokens=2)
        # Only the template's shared opening is left to reuse: first's own entry is gone.
        assert cached(again) == cached(others[-1]) < again["usage"]["prompt_tokens"] - 1
        repeat = complete(small, first, max_tokens=2)
        assert cached(repeat) == repeat["usage"]["prompt_tokens"] - 1


def test_prompt_cache_mb_zero_turns_the_cache_off(demo_home: Path) -> None:
    with srv.running(demo_home, "--model", "fast", "--prompt-cache-mb", "0") as off:
        question = [{"role": "user", "content": "Hi"}]
        complete(off, question, max_tokens=1)
        assert cached(complete(off, question, max_tokens=1)) == 0
