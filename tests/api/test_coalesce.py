"""Tests for tholos_mlx.api.coalesce: a batch's runs of pieces joined, nothing reordered."""

from __future__ import annotations

from tholos_mlx.api.coalesce import coalesced
from tholos_mlx.events import Delta, Event, Finished, ReasoningDelta, ToolCallStart
from tholos_mlx.request import Usage


def test_runs_of_text_and_of_reasoning_each_become_one_piece_in_order() -> None:
    end = Finished("stop", Usage(1, 4))
    batch: list[Event] = [
        ReasoningDelta("Hm"),
        ReasoningDelta("m."),
        Delta("Pa"),
        Delta("ris"),
        ToolCallStart(0, "call_x", "f"),
        Delta("!"),
        end,
    ]
    assert coalesced(batch) == [
        ReasoningDelta("Hmm."),
        Delta("Paris"),
        ToolCallStart(0, "call_x", "f"),
        Delta("!"),
        end,
    ]


def test_text_on_either_side_of_reasoning_stays_apart() -> None:
    assert coalesced([Delta("a"), ReasoningDelta("b"), Delta("c")]) == [
        Delta("a"),
        ReasoningDelta("b"),
        Delta("c"),
    ]
    assert coalesced([]) == []
