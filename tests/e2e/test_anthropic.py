"""End to end: the real server and demo model through the official `anthropic` SDK and raw SSE."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest

from tests import server as srv
from tests.conftest import DEMO_ID, ROOT

pytestmark = pytest.mark.e2e

FRANCE: list[anthropic.types.MessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]
GREEDY = {"temperature": 0}  # anthropic 2.x dropped `temperature` from create(): send it raw
WEATHER: anthropic.types.ToolParam = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture(scope="module")
def sdk(served: srv.Server) -> Iterator[anthropic.Anthropic]:
    """The official client as the docs set it up: the server's root URL and its key."""
    with anthropic.Anthropic(
        base_url=served.base, api_key=served.key, max_retries=0, timeout=300
    ) as client:
        yield client


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_create_answers_the_capital_of_france(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=DEMO_ID, max_tokens=12, messages=FRANCE, extra_body=GREEDY)
    assert "Paris" in text_of(message)
    assert message.model == DEMO_ID
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_a_stream_gives_the_same_text_as_the_non_streamed_answer(
    sdk: anthropic.Anthropic,
) -> None:
    # A system prompt of its own, so the two answers do not depend on what earlier tests cached.
    fields: dict[str, Any] = {
        "model": "fast",
        "max_tokens": 12,
        "system": "You are a geography tutor.",
        "messages": FRANCE,
        "extra_body": GREEDY,
    }
    whole = sdk.messages.create(**fields)
    with sdk.messages.stream(**fields) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == text_of(whole) == text_of(final)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_a_raw_stream_has_anthropics_event_names_in_order(served: srv.Server) -> None:
    body = {"model": DEMO_ID, "max_tokens": 4, "stream": True, "messages": FRANCE, **GREEDY}
    headers = {"x-api-key": served.key, "anthropic-version": "2023-06-01"}
    with served.client() as c:
        r = c.post("/v1/messages", json=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [line[len("event: ") :] for line in r.text.split("\n") if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_count_tokens_equals_the_prompt_the_answer_reports(sdk: anthropic.Anthropic) -> None:
    fields: dict[str, Any] = {"model": DEMO_ID, "system": "Be terse.", "messages": FRANCE}
    counted = sdk.messages.count_tokens(**fields)
    message = sdk.messages.create(max_tokens=2, extra_body=GREEDY, **fields)
    usage = message.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)


def test_a_second_turn_reads_the_first_from_the_prompt_cache(sdk: anthropic.Anthropic) -> None:
    system = "You answer questions about European capitals."
    first = sdk.messages.create(
        model=DEMO_ID, max_tokens=8, system=system, messages=FRANCE, extra_body=GREEDY
    )
    first_prompt = first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)
    turns: list[anthropic.types.MessageParam] = [
        *FRANCE,
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": "And of Italy?"},
    ]
    second = sdk.messages.create(
        model=DEMO_ID, max_tokens=8, system=system, messages=turns, extra_body=GREEDY
    )
    cached = second.usage.cache_read_input_tokens or 0
    # The whole first prompt (all but the token that yields logits) came from the cache.
    assert cached >= first_prompt - 1 > 0
    counted = sdk.messages.count_tokens(model=DEMO_ID, system=system, messages=turns)
    assert second.usage.input_tokens + cached == counted.input_tokens


def test_an_answer_begun_in_a_last_assistant_turn_is_continued(sdk: anthropic.Anthropic) -> None:
    ask: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "Count from 1 to 10, separated by commas."}
    ]
    begun: list[anthropic.types.MessageParam] = [
        *ask,
        {"role": "assistant", "content": "1, 2, 3,"},
    ]
    fresh = text_of(
        sdk.messages.create(model=DEMO_ID, max_tokens=6, messages=ask, extra_body=GREEDY)
    )
    message = sdk.messages.create(model=DEMO_ID, max_tokens=6, messages=begun, extra_body=GREEDY)
    went_on = text_of(message)
    assert fresh.lstrip().startswith("1")  # asked afresh, it counts from the start...
    assert went_on.lstrip().startswith("4"), went_on  # ...prefilled, it goes on from 3
    usage = message.usage
    counted = sdk.messages.count_tokens(model=DEMO_ID, messages=begun)
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == counted.input_tokens


def test_a_forced_call_cut_by_max_tokens_never_reaches_the_client_with_a_made_up_input(
    sdk: anthropic.Anthropic,
) -> None:
    choice: anthropic.types.ToolChoiceAnyParam = {"type": "any", "disable_parallel_tool_use": True}
    fields: dict[str, Any] = {
        "model": DEMO_ID,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": choice,
        "extra_body": GREEDY,
    }
    whole = sdk.messages.create(max_tokens=64, **fields).usage.output_tokens
    for cut in (whole - 3, whole - 6, whole - 9):  # inside the arguments, or their closing
        message = sdk.messages.create(max_tokens=cut, **fields)
        assert message.stop_reason == "max_tokens", (cut, message)
        for block in message.content:  # a call is whole, or left out; never an empty text
            assert block.type == "tool_use", (cut, message)
            jsonschema.validate(block.input, WEATHER["input_schema"])
        with sdk.messages.stream(max_tokens=cut, **fields) as stream:
            streamed = stream.get_final_message()
        assert streamed.stop_reason == "max_tokens"
        assert [b.model_dump(exclude={"id"}) for b in streamed.content] == [
            b.model_dump(exclude={"id"}) for b in message.content
        ], cut


def test_a_tool_use_round_trip_with_tool_choice_any(sdk: anthropic.Anthropic) -> None:
    ask: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    choice: anthropic.types.ToolChoiceAnyParam = {"type": "any", "disable_parallel_tool_use": True}
    fields: dict[str, Any] = {"model": DEMO_ID, "messages": ask, "tools": [WEATHER]}
    counted = sdk.messages.count_tokens(**fields, tool_choice=choice)
    call = sdk.messages.create(**fields, max_tokens=64, tool_choice=choice, extra_body=GREEDY)
    assert call.stop_reason == "tool_use", call
    assert [b.type for b in call.content] == ["tool_use"], call
    use = call.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER["input_schema"])
    usage = call.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)
    # The tools are part of the counted prompt: the same request without them is shorter.
    assert (
        sdk.messages.count_tokens(model=DEMO_ID, messages=ask).input_tokens < counted.input_tokens
    )

    result: anthropic.types.ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": use.id,
        "content": "18 degrees, sunny",
    }
    turns: list[anthropic.types.MessageParam] = [
        *ask,
        {"role": "assistant", "content": call.content},
        {"role": "user", "content": [result]},
    ]
    answer = sdk.messages.create(
        **{**fields, "messages": turns},
        max_tokens=24,
        tool_choice={"type": "none"},
        extra_body=GREEDY,
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"]
    assert text_of(answer).strip()


# Runs in a child: a process that loaded a tokenizer off the main thread can abort at exit
# with mlx 0.32, so the script leaves through os._exit like `serve` does.
COUNT_UNLOADED = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from mlx_lm.tokenizer_utils import load
    from tholos_mlx.chat_prompt import prompt_ids
    from tholos_mlx.model_slot import ModelSlot
    from tholos_mlx.request import GenerationRequest, Message
    from tholos_mlx.tiers import ModelEntry
    from tholos_mlx.token_count import TokenCounter

    folder = Path(sys.argv[1])
    request = GenerationRequest(messages=(Message("user", "What is the capital of France?"),))
    slot = ModelSlot(prompt_cache_mb=0)  # no engine thread: a count must not need one
    counted = asyncio.run(TokenCounter(slot).count(request, ModelEntry("demo", "fast", folder)))
    expected = len(prompt_ids(load(folder), request.messages))
    print(json.dumps({"counted": counted, "expected": expected, "loaded": slot.loaded_id}))
    sys.stdout.flush()
    os._exit(0)
    """
)


def test_count_tokens_for_a_model_not_loaded_reads_only_its_tokenizer(demo_home: Path) -> None:
    folder = demo_home / "models" / DEMO_ID
    run = subprocess.run(
        [sys.executable, "-c", COUNT_UNLOADED, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["loaded"] is None  # no weights were loaded
    assert out["counted"] == out["expected"] > 0


def test_a_prompt_past_the_context_is_refused_in_anthropics_words(
    sdk: anthropic.Anthropic,
) -> None:
    long = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=DEMO_ID, max_tokens=8, messages=long)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    body: Any = caught.value.body
    assert body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert message.startswith("prompt is too long: ") and message.endswith(" maximum")
    tokens, maximum = (int(w) for w in message.split() if w.isdigit())
    assert tokens > maximum


def test_a_system_turn_inside_messages_is_answered_as_claude_code_sends_it(
    sdk: anthropic.Anthropic,
) -> None:
    message = sdk.beta.messages.create(
        model=DEMO_ID,
        max_tokens=6,
        messages=FRANCE,
        betas=["mid-conversation-system-2026-04-07"],
        extra_body={
            **GREEDY,
            "messages": [*FRANCE, {"role": "system", "content": "Answer in one word."}],
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        },
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0


def test_claude_codes_recorded_turn_gets_the_context_error_it_knows_on_the_8k_demo_model(
    served: srv.Server,
) -> None:
    recorded = json.loads((ROOT / "tests/fixtures/agents/claude-code-turn1.json").read_text())
    body = {**recorded["body"], "model": DEMO_ID}
    headers = {k: v for k, v in recorded["headers"].items() if k.startswith("anthropic-")}
    with served.client() as c:
        r = c.post("/v1/messages", params=recorded["query"], json=body, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ") and "maximum" in error["message"]
