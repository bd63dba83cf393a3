"""Events from the engine thread to one request on the event loop, batched, with cancel."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Union

from tholos_mlx.schema import Usage


@dataclass(frozen=True)
class Started:
    """The request holds the engine: its prompt is tokenized and fits the context."""

    model: str
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class Delta:
    """A piece of answer text, whole UTF-8 characters, never part of a stop string."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of a successful generation."""

    finish_reason: str
    usage: Usage


Event = Union[Started, Delta, Finished, BaseException]


class Channel:
    """Engine thread puts events; the loop takes all that are ready at once (one wake-up per batch)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.cancelled = False  # read by the engine thread between tokens

    # -- engine thread side --
    def put(self, item: Event) -> None:
        """Queue an event for the request and wake its handler if it sleeps."""
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def close(self) -> None:
        """No more events will come."""
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    # -- event loop side --
    def cancel(self) -> None:
        """Ask the engine to stop this request within one token (or drop it unstarted)."""
        self.cancelled = True

    async def next_batch(self, timeout: float | None = None) -> list[Event] | None:
        """Every event ready now; [] once closed and drained; None if `timeout` passed first."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    return items
                if self._closed:
                    return []
                if self._waiter is None:
                    self._waiter = self._loop.create_future()
                waiter = self._waiter
            done, _ = await asyncio.wait((waiter,), timeout=timeout)
            if not done:
                return None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
