"""Events from the engine thread to one request on the event loop, batched, with cancel."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Protocol

from tholos_mlx.events import Event


class Sink(Protocol):
    """Where one request's events go from the engine thread: a Channel, or a wrapper of one."""

    def put(self, item: Event) -> None: ...

    @property
    def cancelled(self) -> bool:
        """The request is to stop (client gone, shutdown): read between tokens."""
        ...


_TIMED_OUT = object()  # the value a waiter is woken with when the keepalive timer fires


class Channel:
    """Engine thread puts events; the loop takes all that are ready at once (one wake-up per batch)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[object] | None = None
        self._closed = False
        self.cancelled = False  # read by the engine thread between tokens
        # One keepalive timer per channel, re-armed only when it fires: a timeout per wait
        # (asyncio.wait) cost ~20 us a token, half the server's per-token budget (benchmarks/).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_timeout: float | None = None
        self._last = loop.time()  # when the loop last took events

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
        self._arm(None)

    def _arm(self, timeout: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_timeout = timeout
        if timeout is not None:
            idle = self._loop.time() - self._last
            self._timer = self._loop.call_later(max(0.0, timeout - idle), self._tick, timeout)

    def _tick(self, timeout: float) -> None:
        idle = self._loop.time() - self._last
        if idle >= timeout:
            with self._lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                _wake(waiter, _TIMED_OUT)
            idle = 0.0
        self._timer = self._loop.call_later(timeout - idle, self._tick, timeout)

    async def next_batch(self, timeout: float | None = None) -> list[Event] | None:
        """Every event ready now; [] once closed and drained; None if `timeout` passed first."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._last = self._loop.time()
                    return items
                if self._closed:
                    return []
                if self._waiter is None or self._waiter.done():  # done: left by a cancelled wait
                    self._waiter = self._loop.create_future()
                waiter = self._waiter
            if timeout != self._timer_timeout or (timeout is not None and self._timer is None):
                self._arm(timeout)
            if await waiter is _TIMED_OUT:
                self._last = self._loop.time()
                return None


def _wake(fut: asyncio.Future[object], value: object = None) -> None:
    if not fut.done():
        fut.set_result(value)
