"""Tests for tholos_mlx.api.responses_store: the bounded LRU of stored responses."""

from __future__ import annotations

from tholos_mlx.api.responses_store import ResponseStore, Stored
from tholos_mlx.request import Message, ToolCall


def entry(text: str = "x", body: bytes = b"{}") -> Stored:
    """A stored response whose conversation is one user turn."""
    return Stored(body, (Message("user", text),))


def test_a_stored_response_comes_back_and_a_deleted_one_does_not() -> None:
    store = ResponseStore()
    stored = entry("hello")
    store.put("resp_a", stored)
    assert store.get("resp_a") is stored
    assert store.delete("resp_a") is True
    assert store.get("resp_a") is None
    assert store.delete("resp_a") is False
    assert len(store) == 0


def test_past_the_entry_bound_the_least_recently_used_goes_first() -> None:
    store = ResponseStore(max_entries=2)
    store.put("a", entry())
    store.put("b", entry())
    assert store.get("a") is not None  # a is now more recent than b
    store.put("c", entry())
    assert "b" not in store
    assert "a" in store and "c" in store
    assert len(store) == 2


def test_past_the_text_bound_old_entries_go_but_the_newest_stays() -> None:
    store = ResponseStore(max_chars=100)
    store.put("a", entry("x" * 40))
    store.put("b", entry("y" * 40))
    assert len(store) == 2
    store.put("c", entry("z" * 40))
    assert "a" not in store and "b" in store and "c" in store
    store.put("huge", entry("w" * 1000))
    assert len(store) == 1 and "huge" in store  # alone over the bound, it is still kept


def test_the_text_bound_counts_tool_calls_and_the_body() -> None:
    calls = (ToolCall("call_1", "f", "a" * 50),)
    stored = Stored(b"b" * 10, (Message("assistant", "c" * 5, tool_calls=calls),))
    assert stored.chars == 10 + 5 + 1 + 50


def test_storing_an_id_again_replaces_it_without_counting_it_twice() -> None:
    store = ResponseStore(max_chars=100)
    store.put("a", entry("x" * 60))
    store.put("a", entry("x" * 60))
    store.put("b", entry("y" * 30))
    assert "a" in store and "b" in store
