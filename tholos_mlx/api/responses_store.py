"""Stored Responses for `previous_response_id` and GET: an in-memory LRU, bounded, gone on restart."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from tholos_mlx.request import Message

MAX_RESPONSES = 256
MAX_CHARS = 64 * 2**20  # text held across all entries, counted as if none were shared


@dataclass(frozen=True)
class Stored:
    """One stored response: its JSON object as sent, and the conversation a follow-up continues.

    `conversation` is every input and output turn so far, without `instructions` (OpenAI does
    not carry those over to the next response).
    """

    body: bytes
    conversation: tuple[Message, ...]
    input_items: tuple[dict[str, Any], ...] = ()  # this request's input as sent, with ids

    @property
    def chars(self) -> int:
        """What this entry costs against the store's budget."""
        turns = sum(
            len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls)
            for m in self.conversation
        )
        return len(self.body) + turns + sum(len(orjson.dumps(i)) for i in self.input_items)


class ResponseStore:
    """Least recently used responses, at most `max_entries` of them and `max_chars` of text.

    Only the event loop touches it (handlers and stream renderers), so it needs no lock.
    """

    def __init__(self, max_entries: int = MAX_RESPONSES, max_chars: int = MAX_CHARS) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._entries: OrderedDict[str, tuple[Stored, int]] = OrderedDict()  # with its cost
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._entries

    def get(self, response_id: str) -> Stored | None:
        """The stored response, now the most recently used, or None."""
        held = self._entries.get(response_id)
        if held is None:
            return None
        self._entries.move_to_end(response_id)
        return held[0]

    def put(self, response_id: str, entry: Stored) -> None:
        """Keep a response, evicting the least recently used past either bound (never the newest)."""
        self.delete(response_id)
        cost = entry.chars
        self._entries[response_id] = (entry, cost)
        self._chars += cost
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self._chars > self.max_chars
        ):
            _, (_, old_cost) = self._entries.popitem(last=False)
            self._chars -= old_cost

    def delete(self, response_id: str) -> bool:
        """Forget a response; whether it was there."""
        held = self._entries.pop(response_id, None)
        if held is None:
            return False
        self._chars -= held[1]
        return True
