"""One batch of engine events with its runs of text (or of reasoning) joined: one delta per run."""

from __future__ import annotations

from collections.abc import Iterable

from tholos_mlx.events import Delta, Event, ReasoningDelta


def coalesced(batch: Iterable[Event]) -> list[Event]:
    """The batch with consecutive text pieces, and consecutive reasoning pieces, each one piece."""
    out: list[Event] = []
    for ev in batch:
        prev = out[-1] if out else None
        if isinstance(ev, Delta) and isinstance(prev, Delta):
            out[-1] = Delta(prev.text + ev.text)
        elif isinstance(ev, ReasoningDelta) and isinstance(prev, ReasoningDelta):
            out[-1] = ReasoningDelta(prev.text + ev.text)
        else:
            out.append(ev)
    return out
