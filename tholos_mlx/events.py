"""What the engine tells a request, in order: Started, then text, reasoning and tool-call pieces, then Finished.

Every dialect renders these same events; an exception may take the place of any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from tholos_mlx.request import Usage

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Started:
    """The request holds the engine: its prompt is tokenized and fits the context."""

    model: str
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class Delta:
    """A piece of answer text: whole UTF-8 characters, never part of a stop string."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking, which never goes into the answer's content."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call begins: the index-th of this answer, with its id and function name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    """The next fragment of the index-th call's arguments (JSON text, concatenated in order)."""

    index: int
    arguments: str


@dataclass(frozen=True)
class Finished:
    """The last event of a successful generation; `stop_sequence` is the stop string that ended it."""

    finish_reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


Event = Union[Started, Delta, ReasoningDelta, ToolCallStart, ToolCallDelta, Finished, BaseException]
