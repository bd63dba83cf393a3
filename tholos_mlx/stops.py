"""Stop strings on decoded text: hold back what could start one, cut where one completes."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Filters streamed text so that no stop string, nor any text after it, is ever emitted."""

    __slots__ = ("_stops", "_prefixes", "_prefix_ends", "_longest", "_held", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        # Every proper prefix of a stop: a tail of text equal to one must be held back.
        self._prefixes: frozenset[str] = frozenset(
            s[:i] for s in self._stops for i in range(1, len(s))
        )
        # A held tail ends with the text's last character: most tokens end in none of these.
        self._prefix_ends: frozenset[str] = frozenset(p[-1] for p in self._prefixes)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop string that completed, once one has

    def feed(self, text: str) -> tuple[str, bool]:
        """The text safe to emit now, and whether a stop string has just completed."""
        if not self._stops:
            return text, False
        if self.matched is not None:
            return "", True
        buffer = self._held + text
        # The stop that completes first wins (smallest end, then earliest start), as if text
        # came one character at a time, so the result never depends on how text is split.
        cut = -1
        best_end = len(buffer) + 1
        hit = None
        for stop in self._stops:
            at = buffer.find(stop)
            if at >= 0:
                end = at + len(stop)
                if end < best_end or (end == best_end and at < cut):
                    best_end, cut, hit = end, at, stop
        if hit is not None:
            self._held = ""
            self.matched = hit
            return buffer[:cut], True
        hold = self._hold(buffer)
        if hold:
            self._held = buffer[-hold:]
            return buffer[:-hold], False
        self._held = ""
        return buffer, False

    def flush(self) -> str:
        """At the end of generation (EOS or length), the text still held back."""
        held, self._held = self._held, ""
        return held

    def _hold(self, buffer: str) -> int:
        """The length of the longest tail of buffer that is a proper prefix of a stop."""
        if not buffer or buffer[-1] not in self._prefix_ends:
            return 0
        prefixes = self._prefixes
        for k in range(min(len(buffer), self._longest - 1), 0, -1):
            if buffer[-k:] in prefixes:
                return k
        return 0
