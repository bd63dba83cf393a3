"""The chat prompt: what reaches the model's template, in its own tool format or the default one."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tholos_mlx.chat_prompt import (
    FALLBACK_TEMPLATE,
    ToolFormat,
    call_text,
    opens_thinking,
    prompt_ids,
    tool_format,
)
from tholos_mlx.errors import InvalidRequest
from tholos_mlx.request import Message, Tool, ToolCall

WEATHER = Tool("get_weather", "Weather in a city", {"type": "object", "properties": {}})


class Recorder:
    """A tokenizer stand-in: records what the template got, encodes text as its characters."""

    def __init__(self, template: str | None = "{{ messages }}", has: bool | None = None) -> None:
        self.chat_template = template
        if has is not None:
            self.has_chat_template = has
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def apply_chat_template(self, turns: list[dict[str, Any]], **kwargs: Any) -> str:
        self.calls.append((turns, kwargs))
        return "|".join(f"{t['role']}:{t['content']}" for t in turns)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def test_a_template_without_tools_gets_them_in_the_system_prompt_and_calls_as_text() -> None:
    tok = Recorder("{% for m in messages %}{{ m.content }}{% endfor %}")
    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    messages = [
        Message("system", "Be brief."),
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"c":21}', tool_call_id="call_1"),
    ]
    prompt_ids(tok, messages, (WEATHER,))
    (turns, kwargs) = tok.calls[0]
    assert "tools" not in kwargs and kwargs["add_generation_prompt"] is True
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[0]["content"].startswith("Be brief.\n\n")
    listed = [line for line in turns[0]["content"].splitlines() if line.startswith("{")]
    assert json.loads(listed[0])["name"] == "get_weather"
    assert turns[2]["content"] == call_text(call, ToolFormat())
    assert (
        turns[2]["content"]
        == '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'
    )
    assert turns[3]["content"] == '<tool_response>\n{"c":21}\n</tool_response>'


def test_results_of_parallel_calls_share_one_user_turn() -> None:
    tok = Recorder("plain")
    messages = [
        Message("user", "Two things?"),
        Message("tool", "a", tool_call_id="1"),
        Message("tool", "b", tool_call_id="2"),
    ]
    prompt_ids(tok, messages, (WEATHER,))
    turns = tok.calls[0][0]
    assert turns[-1]["content"].count("<tool_response>") == 2


def test_a_template_that_renders_tools_gets_them_and_openai_shaped_calls() -> None:
    tok = Recorder("{% if tools %}{{ tools }}{% endif %}")
    tok.tool_call_start, tok.tool_call_end = "<|call|>", "<|/call|>"  # type: ignore[attr-defined]
    fmt = tool_format(tok)
    assert fmt == ToolFormat("<|call|>", "<|/call|>", native=True)
    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    messages = [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "21", tool_call_id="call_1", name="get_weather"),
    ]
    prompt_ids(tok, messages, (WEATHER,), fmt)
    turns, kwargs = tok.calls[0]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"
    assert turns[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert (turns[2]["role"], turns[2]["tool_call_id"], turns[2]["name"]) == (
        "tool",
        "call_1",
        "get_weather",
    )


def test_a_renderer_in_code_is_used_as_it_is_and_counts_as_knowing_tools() -> None:
    tok = Recorder(template=None, has=True)  # mlx-lm's chat_template_type renderers
    assert tool_format(tok).native
    prompt_ids(tok, [Message("user", "hi")])
    assert "chat_template" not in tok.calls[0][1]


def test_a_model_without_any_template_gets_the_chatml_fallback() -> None:
    tok = Recorder(template=None, has=False)
    prompt_ids(tok, [Message("user", "hi")])
    assert tok.calls[0][1]["chat_template"] == FALLBACK_TEMPLATE
    assert not tool_format(tok).native


def test_an_answer_begun_is_continued_its_turn_left_open() -> None:
    tok = Recorder()
    prompt_ids(tok, [Message("user", "hi"), Message("assistant", "Sure,")], continue_final=True)
    kwargs = tok.calls[0][1]
    assert kwargs["continue_final_message"] is True and kwargs["add_generation_prompt"] is False
    prompt_ids(tok, [Message("user", "hi")])
    assert "continue_final_message" not in tok.calls[1][1]
    assert tok.calls[1][1]["add_generation_prompt"] is True


def test_a_chatml_template_ends_the_prompt_with_the_begun_answer(tiny_folder: Any) -> None:
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(tiny_folder)  # the demo model's ChatML template, on a real tokenizer
    chat = [Message("user", "Count to 10."), Message("assistant", "1, 2, 3,")]
    begun = tok.decode(prompt_ids(tok, chat, continue_final=True))
    assert begun.endswith("<|im_start|>assistant\n1, 2, 3,")
    closed = tok.decode(prompt_ids(tok, chat))
    assert closed.endswith("1, 2, 3,<|im_end|>\n<|im_start|>assistant\n")


def thinker(has_thinking: bool = True) -> SimpleNamespace:
    """A tokenizer that thinks between tokens 7 (start) and 8, 9 (end)."""
    return SimpleNamespace(
        has_thinking=has_thinking, think_start_tokens=[7], think_end_tokens=[8, 9]
    )


def test_a_prompt_that_opens_thinking_without_closing_it_starts_the_answer_inside_it() -> None:
    assert opens_thinking(thinker(), [1, 2, 7])
    assert opens_thinking(thinker(), [1, 7, 8, 9, 3, 7, 4])  # an earlier one closed, this one open
    assert opens_thinking(thinker(), [1, 7, 8])  # half an end marker does not close it


def test_a_closed_or_absent_thinking_block_starts_the_answer_outside() -> None:
    assert not opens_thinking(thinker(), [1, 7, 3, 8, 9])
    assert not opens_thinking(thinker(), [1, 2, 3])
    assert not opens_thinking(thinker(has_thinking=False), [1, 2, 7])


class OneSystemFirst(Recorder):
    """A template like Qwen3's: a system message anywhere but first is refused."""

    def apply_chat_template(self, turns: list[dict[str, Any]], **kwargs: Any) -> str:
        if any(t["role"] == "system" for t in turns[1:]):
            raise ValueError("System message must be at the beginning.")
        return super().apply_chat_template(turns, **kwargs)


def test_a_system_turn_mid_conversation_reaches_a_template_that_takes_it_as_it_is() -> None:
    tok = Recorder()
    messages = [Message("user", "Hi"), Message("system", "Agents: a, b.")]
    prompt_ids(tok, messages)
    assert [(t["role"], t["content"]) for t in tok.calls[0][0]] == [
        ("user", "Hi"),
        ("system", "Agents: a, b."),
    ]


def test_a_template_that_allows_one_system_message_gets_late_ones_as_user_text_in_place() -> None:
    tok = OneSystemFirst()
    call = ToolCall("call_1", "read", "{}")
    messages = [
        Message("system", "Be brief."),
        Message("user", "What does notes.txt say?"),
        Message("system", "Agents: a, b."),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "hello", tool_call_id="call_1"),
        Message("system", "Reminder."),
        Message("user", "Thanks."),
    ]
    prompt_ids(tok, messages)
    turns = tok.calls[-1][0]
    assert [(t["role"], t["content"]) for t in turns if t["role"] != "assistant"] == [
        ("system", "Be brief."),
        ("user", "What does notes.txt say?\n\nAgents: a, b."),
        ("user", "<tool_response>\nhello\n</tool_response>"),
        ("user", "Reminder.\n\nThanks."),
    ]


def test_a_template_refusing_what_folding_cannot_mend_is_still_a_clear_400() -> None:
    tok = OneSystemFirst()
    with pytest.raises(InvalidRequest, match="chat template refused"):
        prompt_ids(tok, [Message("system", "a"), Message("system", "b"), Message("user", "Hi")])
