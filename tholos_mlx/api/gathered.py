"""The events of one answer gathered for a reply that is not streamed."""

from __future__ import annotations

from dataclasses import dataclass, field

from tholos_mlx.events import Delta, Event, Finished, ReasoningDelta, ToolCallDelta, ToolCallStart
from tholos_mlx.request import ToolCall


@dataclass
class _Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class Gathered:
    """Text, reasoning and tool calls so far; `finished` once the last event came."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _Call] = {}
        self.finished: Finished | None = None

    def add(self, ev: Event) -> None:
        """Take one event; an exception is raised as the request's error."""
        if isinstance(ev, Delta):
            self._text.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            self._reasoning.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            self._calls[ev.index] = _Call(ev.id, ev.name)
        elif isinstance(ev, ToolCallDelta):
            self._calls[ev.index].arguments.append(ev.arguments)
        elif isinstance(ev, Finished):
            self.finished = ev
        elif isinstance(ev, BaseException):
            raise ev

    @property
    def text(self) -> str:
        """The answer's content."""
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        """The model's thinking, apart from the content."""
        return "".join(self._reasoning)

    @property
    def calls(self) -> list[ToolCall]:
        """The tool calls, in order, with their arguments joined."""
        return [
            ToolCall(c.id, c.name, "".join(c.arguments)) for _, c in sorted(self._calls.items())
        ]
