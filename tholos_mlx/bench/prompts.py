"""Benchmark prompts of exact token counts, tokenized exactly as the engine tokenizes them."""

from __future__ import annotations

import secrets
from typing import Any

from tholos_mlx.chat_prompt import prompt_ids
from tholos_mlx.errors import UsageError
from tholos_mlx.request import Message

Messages = list[dict[str, str]]

# A list of numbers cut anywhere: the model goes on counting, so it rarely stops early.
COUNT_SYSTEM = "Count on."
_NUMBERS = ", ".join(str(i) for i in range(1, 1400)) + ", "  # ~7,000 tokens; repeated if more
_POLICY = (
    "You are the support assistant of Harbor Lane Books, an independent bookshop. "
    "Answer in two sentences at most, politely and plainly. Opening hours are 9 to 18 "
    "on weekdays and 10 to 16 on Saturdays; the shop is closed on Sundays and public holidays. "
    "Orders over 40 euros ship free within the country; smaller orders pay 4.90 euros. "
    "Books may be returned within 30 days with the receipt, unread and undamaged. "
    "Gift cards never expire and can be used online or in the shop. "
    "The reading club meets on the first Thursday of each month at 19:00. "
    "Never promise a delivery date; say that most orders arrive within three working days. "
)
QUESTIONS = (
    "When are you open on Saturday?",
    "Is shipping free for a 25 euro order?",
    "Can I return a book after two weeks?",
    "Do gift cards expire?",
    "When does the reading club meet?",
    "Are you open on Sunday?",
    "How long does delivery take?",
    "Can I use a gift card online?",
)


def chat_ids(tokenizer: Any, messages: Messages) -> list[int]:
    """The prompt's token ids, built by the same function the server uses."""
    return prompt_ids(tokenizer, [Message(m["role"], m["content"]) for m in messages])  # type: ignore[arg-type]


def _fit(tokenizer: Any, source: str, total: int, build: Any) -> tuple[Messages, list[int]]:
    """Messages `build(text)` whose prompt is `total` tokens, `text` a token prefix of `source`."""
    pool: list[int] = list(tokenizer.encode(source, add_special_tokens=False))
    overhead = len(chat_ids(tokenizer, build("")))
    if total <= overhead:
        raise UsageError(
            f"a {total}-token prompt is too short: this model's chat template alone takes "
            f"{overhead} tokens; ask for at least {overhead + 1}"
        )
    while len(pool) < total:
        pool += pool
    take = total - overhead
    best: tuple[int, Messages, list[int]] | None = None
    for _ in range(12):  # decode -> encode may merge tokens at the cut: nudge until exact
        messages = build(tokenizer.decode(pool[:take]))
        ids = chat_ids(tokenizer, messages)
        miss = len(ids) - total
        if best is None or abs(miss) < abs(best[0]):
            best = (miss, messages, ids)
        if miss == 0:
            break
        take = max(1, take - miss)
    assert best is not None
    return best[1], best[2]


def counting_prompt(tokenizer: Any, total: int, nonce: str = "") -> tuple[Messages, list[int]]:
    """A chat of `total` prompt tokens that makes the model count on (few early stops).

    A `nonce` line opens the system prompt: a prompt cache (ours or a peer's) then finds no
    earlier run's prefix beyond the chat template's first tokens.
    """
    system = f"{nonce}\n{COUNT_SYSTEM}" if nonce else COUNT_SYSTEM
    return _fit(
        tokenizer,
        _NUMBERS,
        total,
        lambda text: [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
        ],
    )


def nonce() -> str:
    """A short line no earlier run began with, e.g. 'Run 3f9a2c71.'."""
    return f"Run {secrets.token_hex(4)}."


def shared_system(tokenizer: Any, total: int) -> str:
    """A system prompt of about `total` tokens for the cached-prefix case."""
    messages, _ = _fit(
        tokenizer,
        _POLICY * (1 + total // 100),
        total,
        lambda text: [
            {"role": "system", "content": text},
            {"role": "user", "content": QUESTIONS[0]},
        ],
    )
    return messages[0]["content"]


def question_chat(system: str, index: int) -> Messages:
    """The shared system prompt with the index-th question."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]},
    ]
