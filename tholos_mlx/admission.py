"""FIFO admission to the one engine: wait deadline -> 503, full line -> 429, with Retry-After."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from tholos_mlx.errors import RateLimited, ServiceUnavailable

# Until the first request has run, guess this many seconds per request for Retry-After.
_FIRST_GUESS_S = 10.0


class Turn:
    """The right to use the engine; release() hands it to the next in line (idempotent)."""

    __slots__ = ("_gate", "_released", "_started")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._released = False
        self._started = time.monotonic()

    def release(self) -> None:
        """Give the engine to the next waiter; safe to call more than once, from the loop only."""
        if not self._released:
            self._released = True
            self._gate._release(time.monotonic() - self._started)


class Gate:
    """One holder at a time, waiters served in arrival order, a bounded and timed line."""

    def __init__(
        self,
        *,
        max_queue: int,
        queue_timeout: float,
    ) -> None:
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._busy = False
        self._closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._avg_s: float | None = None

    @property
    def waiting(self) -> int:
        """How many requests wait for their turn (the holder is not counted)."""
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        """Whether a request holds the engine now."""
        return self._busy

    def retry_after(self) -> int:
        """Whole seconds (1..60) until a new request could likely start, from the work ahead."""
        per = self._avg_s if self._avg_s is not None else _FIRST_GUESS_S
        ahead = len(self._waiters) + (1 if self._busy else 0)
        return max(1, min(60, math.ceil(per * max(ahead, 1))))

    def close(self) -> None:
        """Refuse new work and fail every waiter with 503 (shutting down)."""
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(self._closing())

    def _closing(self) -> ServiceUnavailable:
        return ServiceUnavailable("The server is shutting down; try again shortly.", retry_after=5)

    async def acquire(self) -> Turn:
        """Wait for the engine in arrival order; raise 429 at once if the line is full, 503 at the deadline."""
        if self._closed:
            raise self._closing()
        if not self._busy and not self._waiters:
            self._busy = True
            return Turn(self)
        if len(self._waiters) >= self.max_queue:
            raise RateLimited(
                "The server is busy: too many requests are waiting. Retry after a pause.",
                retry_after=self.retry_after(),
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives
            # as the turn is handed over, and the gone client's request would run anyway.
            await asyncio.wait((fut,), timeout=self.queue_timeout)
        except BaseException:
            # Cancelled while waiting (client gone): leave the line, or pass on a turn just handed to us.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(None)
            else:
                self._forget(fut)
            raise
        if not fut.done():
            self._forget(fut)
            raise ServiceUnavailable(
                f"The engine stayed busy for {self.queue_timeout:g} s; this request was not started. "
                "Retry after a pause.",
                retry_after=self.retry_after(),
            )
        fut.result()  # close() failed the waiters: its 503 is raised here
        return Turn(self)

    def _forget(self, fut: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
        if not fut.done():
            fut.cancel()

    def _release(self, held_s: float | None) -> None:
        if held_s is not None:  # None: a turn passed on unused, which says nothing of the work
            self._avg_s = held_s if self._avg_s is None else 0.7 * self._avg_s + 0.3 * held_s
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the engine passes straight to the next waiter
                return
        self._busy = False
