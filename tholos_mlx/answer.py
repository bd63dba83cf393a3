"""The answer's text split into events: reasoning, content (stop strings applied), and tool calls.

The generation loop hands over whole characters; this turns them into the events every dialect
renders. Markers (a thinking end, a tool call's start and end) may arrive cut across pieces, so
a tail that could begin one is held back until the next piece decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tholos_mlx.events import (
    Delta,
    Event,
    FinishReason,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.ids import alnum_id
from tholos_mlx.stops import StopMatcher

# The head of a call in the default format: {"name": "NAME", "arguments": ...
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def new_call_id() -> str:
    """A tool call id shaped like OpenAI's: "call_" and 24 letters and digits."""
    return alnum_id("call_", 24)


def held_prefix(text: str, marker: str) -> int:
    """The length of the longest tail of text that is a proper prefix of marker."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


@dataclass(frozen=True)
class Markers:
    """What this answer watches for: thinking's end, and tool calls' start and end (None: no tools)."""

    think_end: str | None = None
    thinking_first: bool = False  # the prompt opened a thinking block: the answer starts in it
    think_start: str | None = None
    call_start: str | None = None
    call_end: str | None = None
    one_call: bool = False  # parallel_tool_calls false: stop after the first call
    parse_call: Callable[[str], Any] | None = None  # the model family's parser (mlx-lm), if any


class AnswerSplitter:
    """Feed it text; it puts events and says when to stop (a stop string, or the one call done)."""

    def __init__(
        self, put: Callable[[Event], None], stops: tuple[str, ...], markers: Markers
    ) -> None:
        self._put = put
        self._stops = StopMatcher(stops)
        self._m = markers
        self._state = "thinking" if markers.thinking_first and markers.think_end else "content"
        self._buf = ""
        self._call: list[str] = []  # the current call's text after its start marker
        self._call_index = -1
        self._call_named = False
        self._args_sent = 0
        self._after_thinking = False  # drop the newlines templates put after a thinking block
        self._spaces = ""  # whitespace held while tools are on
        self._done_calls: set[tuple[str, str]] = set()
        self._stop_calls = False
        self.calls = 0
        self.dropped_cut_call = (
            False  # a later call cut by the end was left out: the calls sent are whole
        )
        self.content_sent = False

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the answer, if one did."""
        return self._stops.matched

    def feed(self, text: str) -> bool:
        """Take the next piece of text; True when generation should stop here."""
        self._buf += text
        while self._buf:
            if self._state == "thinking":
                if not self._thinking():
                    return False
            elif self._state == "call":
                done = self._in_call()
                if done is None:
                    return False
                if done and (self._m.one_call or self._stop_calls):
                    return True
            else:
                stop, more = self._content()
                if stop:
                    return True
                if not more:
                    return False
        return False

    def finish(self, cut: bool = False) -> None:
        """Generation ended (EOS, or `cut` by max_tokens): send what was held back.

        A call's opening marker cut by max_tokens is the start of a call that never came,
        not text: it is dropped, like a call cut inside its body."""
        buf, self._buf = self._buf, ""
        if self._state == "thinking":
            if buf:
                self._put(ReasoningDelta(buf))
        elif self._state == "call":  # cut by max_tokens: the held piece of the end marker goes
            self._close_call("".join(self._call), complete=False)
        elif cut and buf and self._m.call_start and self._m.call_start.startswith(buf):
            self.dropped_cut_call = self.calls > 0
            self._content_text("", final=True)  # a stop string's held tail, if any
            self._spaces = ""
        else:
            self._content_text(buf, final=True)

    def end(self, reason: FinishReason) -> FinishReason:
        """Generation ended for `reason` ("stop": EOS or a stop string, "length": max_tokens):
        send what was held back and say why the answer ended, as the client should read it.

        Calls end the answer; a further call cut by max_tokens was dropped whole, so what the
        client gets is complete calls, and it should act on them ("tool_calls"), not treat
        them as cut."""
        if self.stop_sequence is not None:
            return reason
        self.finish(cut=reason == "length")
        whole_calls = reason == "stop" or (reason == "length" and self.dropped_cut_call)
        return "tool_calls" if self.calls and whole_calls else reason

    # -- states --
    def _thinking(self) -> bool:
        end = self._m.think_end or ""
        at = self._buf.find(end)
        if at >= 0:
            if at:
                self._put(ReasoningDelta(self._buf[:at]))
            self._buf = self._buf[at + len(end) :]
            self._state = "content"
            self._after_thinking = True
            return True
        hold = held_prefix(self._buf, end)
        ready = self._buf[: len(self._buf) - hold]
        if ready:
            self._put(ReasoningDelta(ready))
        self._buf = self._buf[len(ready) :]
        return False

    def _content(self) -> tuple[bool, bool]:
        """(stop now, more to process in this buffer)."""
        if self._after_thinking:
            self._buf = self._buf.lstrip("\n")
            if not self._buf:
                return False, False
            self._after_thinking = False
        start = self._m.call_start
        think = self._m.think_start if self._m.think_end and not self.content_sent else None
        cut = -1
        if start:
            cut = self._buf.find(start)
        if think:
            at = self._buf.find(think)
            if at >= 0 and not self._buf[:at].strip() and (cut < 0 or at < cut):
                # A model that opens its own thinking block at the start of the answer.
                self._buf = self._buf[at + len(think) :]
                self._state = "thinking"
                return False, True
        if cut >= 0:
            before, self._buf = self._buf[:cut], self._buf[cut + len(start or "") :]
            if self._content_text(before, final=True):
                return True, False
            self._open_call()
            return False, True
        hold = max(
            held_prefix(self._buf, start) if start else 0,
            held_prefix(self._buf, think) if think else 0,
        )
        ready, self._buf = self._buf[: len(self._buf) - hold], self._buf[len(self._buf) - hold :]
        return self._content_text(ready, final=False), False

    def _content_text(self, text: str, *, final: bool) -> bool:
        out, hit = self._stops.feed(text) if text else ("", False)
        if final and not hit:
            out += self._stops.flush()
        if out and self._m.call_start and not out.strip():
            # Spaces between calls, or around one, are not an answer: send them only before text.
            self._spaces += out
        elif out:
            self._put(Delta(self._spaces + out))
            self._spaces = ""
            self.content_sent = True
        return hit

    # -- tool calls --
    def _open_call(self) -> None:
        self._spaces = ""
        self._state = "call"
        self._call = []
        self._call_index = self.calls
        self._call_named = False
        self._args_sent = 0
        self.calls += 1

    def _in_call(self) -> bool | None:
        """None: need more text; else whether a call just completed."""
        end = self._m.call_end or ""
        at = self._buf.find(end)
        if at >= 0:
            self._call.append(self._buf[:at])
            self._buf = self._buf[at + len(end) :]
            kept = self._close_call("".join(self._call), complete=True)
            self._state = "content"
            if not kept:  # the same call again: a small model looping, not a new call
                self._buf = ""
                self._stop_calls = True
            return True
        hold = held_prefix(self._buf, end)
        self._call.append(self._buf[: len(self._buf) - hold])
        self._buf = self._buf[len(self._buf) - hold :]
        if self._call_index == 0:  # later calls wait until whole: one may repeat an earlier one
            self._stream_call("".join(self._call))
        return None

    def _stream_call(self, text: str) -> None:
        """Send the name as soon as it is known and the arguments as they grow."""
        head = _CALL_HEAD.match(text)
        if head is None:
            return
        if not self._call_named:
            self._call_named = True
            self._put(ToolCallStart(self._call_index, new_call_id(), _unescape(head.group(1))))
        args = text[head.end() :]
        # Hold back trailing spaces and one "}": they may be the end of the call object itself.
        ready = args.rstrip()
        safe = len(ready) - 1 if ready.endswith("}") else len(ready)
        if safe > self._args_sent:
            self._put(ToolCallDelta(self._call_index, args[self._args_sent : safe]))
            self._args_sent = safe

    def _close_call(self, text: str, *, complete: bool) -> bool:
        """Send what is left of the call; False (nothing sent) if it repeats an earlier call."""
        head = _CALL_HEAD.match(text)
        if head is not None:
            name = _unescape(head.group(1))
            args = text[head.end() :].rstrip()
            if args.endswith("}") and (complete or _is_json(args[:-1])):
                args = args[:-1].rstrip()  # the call object's own closing brace
        else:
            parsed = _parse_call(text, self._m.parse_call) if complete else None
            if parsed is None:
                self.calls -= 1  # not a call after all: nothing was sent for it
                return True
            name, args = parsed
        if not self._call_named and (not complete or (name, args) in self._done_calls):
            # A later call cut by the end, or one repeating an earlier call: never sent at all.
            self.calls -= 1
            self.dropped_cut_call = not complete
            return False
        self._done_calls.add((name, args))
        if not self._call_named:
            self._call_named = True
            self._put(ToolCallStart(self._call_index, new_call_id(), name))
        if len(args) > self._args_sent:
            self._put(ToolCallDelta(self._call_index, args[self._args_sent :]))
        return True


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _unescape(name: str) -> str:
    try:
        value = orjson.loads(f'"{name}"')
    except orjson.JSONDecodeError:
        return name
    return value if isinstance(value, str) else name


def _parse_call(text: str, parser: Callable[[str], Any] | None) -> tuple[str, str] | None:
    """A call in another family's format, through mlx-lm's parser for it, or as a JSON object."""
    try:
        parsed = parser(text) if parser is not None else orjson.loads(text)
    except Exception:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    arguments = parsed.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    return parsed["name"], arguments
