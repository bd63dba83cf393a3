"""The prompts of `--workload edit|prose` and of `--agent-turn`: what agents send, in miniature.

"edit" answers copy much of their prompt (a file rewritten with one change, a JSON document
echoed with a field added, a long quote), which is where drafting from the prompt pays; "prose"
is free writing with little to copy, where drafting must not cost. A prompt may open with a
nonce line, so that no prompt cache holds an earlier run of it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

Messages = list[dict[str, str]]

_FILE = '''"""Prices of a shopping basket."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 1


def total(items: list[Item]) -> float:
    """The basket's total before tax."""
    return sum(item.price * item.quantity for item in items)


def with_tax(items: list[Item], rate: float = 0.2) -> float:
    """The basket's total with tax at `rate`."""
    return round(total(items) * (1 + rate), 2)


def cheapest(items: list[Item]) -> Item | None:
    """The cheapest item, or None for an empty basket."""
    return min(items, key=lambda item: item.price, default=None)


def describe(items: list[Item]) -> str:
    """One line per item, then the total."""
    lines = [f"{item.quantity} x {item.name}: {item.price:.2f}" for item in items]
    lines.append(f"total: {total(items):.2f}")
    return "\\n".join(lines)
'''

_DOCUMENT = {
    "id": "order-20931",
    "customer": {"name": "Ada Moreau", "email": "ada@example.com", "city": "Lyon"},
    "items": [
        {"sku": "BK-1042", "title": "The Lighthouse Keeper", "price": 14.5, "quantity": 1},
        {"sku": "BK-2210", "title": "Maps of the North Sea", "price": 22.0, "quantity": 2},
        {"sku": "GC-0050", "title": "Gift card", "price": 50.0, "quantity": 1},
    ],
    "shipping": {"method": "standard", "cost": 0.0, "country": "FR"},
    "status": "paid",
    "notes": "Leave the parcel with the neighbour if nobody is home.",
}

_QUOTE = (
    "It was a bright cold day in April, and the harbour bells were striking nine. The keeper "
    "climbed the hundred and twelve steps of the tower as he had every morning for thirty years, "
    "counting them under his breath, and at the top he wiped the great lens with a soft cloth "
    "until it shone. Below him the fishing boats were coming home, their sails patched and grey, "
    "and the gulls followed them in long untidy lines. He wrote the weather in the log: wind from "
    "the north-east, sea moderate, visibility good. Then he made tea on the little stove, sat by "
    "the window, and watched the tide turn over the rocks where the old schooner had gone down "
    "the winter he arrived."
)


@dataclass(frozen=True)
class Kind:
    """One kind of prompt of a workload: its name and how to build its messages."""

    name: str
    build: Callable[[str], Messages]


def _ask(nonce: str, text: str) -> Messages:
    system = "You are a careful assistant. Reply with the result only."
    return [
        {"role": "system", "content": f"{nonce}\n{system}" if nonce else system},
        {"role": "user", "content": text},
    ]


def _file(nonce: str) -> Messages:
    return _ask(
        nonce,
        "Rewrite this Python file with one change: rename the function `cheapest` to "
        f"`least_expensive`. Reply with the whole file.\n\n```python\n{_FILE}```",
    )


def _json(nonce: str) -> Messages:
    document = json.dumps(_DOCUMENT, indent=2)
    return _ask(
        nonce,
        'Echo this JSON document with one field added at the top level: "reviewed": true. '
        f"Reply with the JSON only.\n\n{document}",
    )


def _quote(nonce: str) -> Messages:
    return _ask(nonce, f"Quote this passage exactly, word for word:\n\n{_QUOTE}")


def _story(nonce: str) -> Messages:
    return _ask(nonce, "Write a short story about a lighthouse keeper who finds an old map.")


def _letter(nonce: str) -> Messages:
    return _ask(nonce, "Write a friendly letter inviting a neighbour to a garden party.")


def _explain(nonce: str) -> Messages:
    return _ask(nonce, "Explain to a child why the sky is blue and sunsets are red.")


WORKLOADS: dict[str, tuple[Kind, ...]] = {
    "edit": (Kind("file", _file), Kind("json", _json), Kind("quote", _quote)),
    "prose": (Kind("story", _story), Kind("letter", _letter), Kind("explain", _explain)),
}


def billing_header() -> str:
    """Claude Code's volatile first system line: its `cch` changes on every request."""
    return (
        "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli; "
        f"cch={secrets.token_hex(3)};"
    )


def agent_turn(
    header: str, system: str, question: str, answer: str | None = None
) -> tuple[list[dict[str, str]], Messages]:
    """Claude Code's system blocks (the volatile line first) and the messages of a first turn,
    or of the second turn when the first turn's `answer` is given."""
    blocks = [{"type": "text", "text": header}, {"type": "text", "text": system}]
    messages = [{"role": "user", "content": question}]
    if answer is not None:
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Thank you. And in one word?"},
        ]
    return blocks, messages
