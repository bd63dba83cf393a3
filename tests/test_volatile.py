"""Lines agents change every request are dropped before templating, so the prompt cache holds.

Replays the two consecutive Claude Code requests recorded from the CLI (tests/fixtures/agents/)
through the real Anthropic parser and the tiny test model's template and tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from tholos_mlx.api.anthropic_request import parse_messages
from tholos_mlx.chat_prompt import prompt_ids, tool_format
from tholos_mlx.request import GenerationRequest, Message
from tholos_mlx.volatile import PATTERNS, steady

AGENTS = Path(__file__).parent / "fixtures" / "agents"
HEADER = "x-anthropic-billing-header: cc_version=2.1.197.191; cc_entrypoint=sdk-cli;"


def recorded(turn: int, header: str | None = None) -> GenerationRequest:
    """Claude Code's request of that turn, its billing header line replaced if given."""
    body: dict[str, Any] = json.loads((AGENTS / f"claude-code-turn{turn}.json").read_text())["body"]
    if header is not None:
        assert body["system"][0]["text"] == HEADER
        body["system"][0]["text"] = header
    return parse_messages(json.dumps(body).encode()).request


def common(a: list[int], b: list[int]) -> int:
    """The length of the shared prefix."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    """The tiny test model's tokenizer and chat template."""
    return load_tokenizer(tiny_folder)


def ids(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """The prompt as the engine renders it."""
    return prompt_ids(tokenizer, request.messages, request.tools, tool_format(tokenizer))


def test_the_billing_header_line_is_dropped_and_the_rest_of_the_system_text_kept() -> None:
    kept = "You are a helpful agent.\nBe brief."
    messages = [
        Message("system", f"{HEADER} cch=8f2a1;\n{kept}"),
        Message("user", "x-anthropic-billing-header: in a user turn stays"),
    ]
    out = steady(messages)
    assert out[0].content == kept
    assert out[1] == messages[1]


def test_a_system_turn_that_was_only_the_header_is_gone() -> None:
    out = steady([Message("system", HEADER), Message("user", "hi")])
    assert out == [Message("user", "hi")]


def test_a_conversation_without_volatile_lines_is_unchanged() -> None:
    messages = [Message("system", "Say hi.\nx-other: 1"), Message("user", "hi")]
    assert steady(messages) == messages


def test_every_pattern_is_listed_in_the_agents_doc() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "agents.md").read_text(encoding="utf-8")
    for v in PATTERNS:
        assert v.agent in doc
    assert "x-anthropic-billing-header" in doc


@pytest.mark.parametrize(
    "changed",
    [
        "x-anthropic-billing-header: cc_version=2.1.197.4e1; cc_entrypoint=sdk-cli;",
        f"{HEADER} cch=9b3f0;",  # what Claude Code adds against api.anthropic.com
        "x-anthropic-billing-header: cc_version=2.2.0.002; cc_entrypoint=cli; cch=00aa1;",
    ],
)
def test_a_second_claude_code_turn_shares_the_whole_first_prompt_whatever_its_header(
    tokenizer: Any, changed: str
) -> None:
    first = ids(tokenizer, recorded(1))
    second = ids(tokenizer, recorded(2, changed))
    # Turn 1's prompt ends with the assistant's turn opened; turn 2 holds that turn's call.
    assert common(first, second) >= len(first) - 8
    assert common(first, second) == common(first, ids(tokenizer, recorded(2)))
    assert not any("x-anthropic-billing-header" in m.content for m in steady(recorded(2).messages))
