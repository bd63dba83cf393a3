"""The one MLX thread: a queue of jobs, each one request from admission to its last event.

Each job calls the *runner* on this thread: `runner(slot, request, entry, sink, times)`, with
the engine's slot, the request, the model it names (None: the loaded one), where its events
go (`sink.put(event)`; `sink.cancelled` read between tokens) and its Timings. It puts
Started, the answer's events and Finished, or raises (a TholosError is the request's
answer; anything else a 500). In the server it is answering.answer; tests and the bench's
ceiling pass a scripted one; a wrapper (ranks) may stand between if it keeps this shape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from typing import Callable, Generic, Protocol, TypeVar

from tholos_mlx import timings
from tholos_mlx.channel import Channel, Sink
from tholos_mlx.errors import ServerError, ServiceUnavailable, TholosError
from tholos_mlx.request import GenerationRequest
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

log = logging.getLogger("tholos.engine")

SHUTDOWN_WAIT_S = 15.0  # at SIGTERM: finish the running token, save the prompt cache, unload


class Slot(Protocol):
    """What the thread needs of the model slot: which model is in memory, switch, unload."""

    @property
    def loaded_id(self) -> str | None: ...

    @property
    def last_id(self) -> str | None: ...

    def switch(self, entry: ModelEntry) -> object: ...

    def unload(self, deadline: float | None = None) -> None: ...


class Counter(Protocol):
    """Counts a request's prompt tokens off the engine thread (token_count.TokenCounter)."""

    async def count(self, request: GenerationRequest, entry: ModelEntry | None) -> int: ...


S = TypeVar("S", bound=Slot)
Runner = Callable[[S, GenerationRequest, ModelEntry | None, Sink, Timings], None]
Channels = Callable[[asyncio.AbstractEventLoop], Channel]  # makes each request's channel


class Engine(Generic[S]):
    """Owns MLX: every model, cache and generation call runs on its single thread."""

    def __init__(
        self,
        slot: S,
        runner: Runner[S],
        counter: Counter,
        *,
        idle_unload: float = 0.0,
        channels: Channels = Channel,  # the bench's ceiling meters the loop's side of each
    ) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="tholos-engine", daemon=True)
        self._slot = slot
        self._runner = runner
        self._counter = counter
        self._channels = channels
        self._current: Channel | None = None
        self._stopping = False
        self._idle_unload = idle_unload  # seconds; 0 never
        self._idle_since = time.monotonic()  # when the last job ended
        self._save_by: float | None = None  # the shutdown deadline for the disk prompt cache

    # -- called from any thread --
    @property
    def loaded(self) -> str | None:
        """The id of the model in memory, if any."""
        return self._slot.loaded_id

    @property
    def last_loaded(self) -> str | None:
        """The model in memory, else the one idle unload freed: a request naming none reloads it."""
        return self._slot.last_id

    def start(self) -> None:
        """Start the engine thread."""
        self._thread.start()

    def begin_shutdown(self) -> None:
        """Shutdown: stop the running generation within a token and refuse queued ones."""
        self._stopping = True
        current = self._current
        if current is not None:
            current.cancel()

    def stop(self, timeout: float = SHUTDOWN_WAIT_S) -> None:
        """Cancel the running generation, fail what is queued, save the prompt cache, end the thread."""
        self.begin_shutdown()
        self._save_by = time.monotonic() + timeout * 0.8  # leave time to free the model
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the engine thread did not finish within %.0f s", timeout)

    def load(self, entry: ModelEntry) -> None:
        """Load a model on the engine thread and wait for it (startup's --model)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def job() -> None:
            try:
                self._slot.switch(entry)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        self._jobs.put(job)
        done.result()

    def submit(
        self,
        request: GenerationRequest,
        entry: ModelEntry | None,
        on_done: Callable[[], None],
        arrived: float | None = None,
        queued: float | None = None,
    ) -> Channel:
        """Queue a generation; its events arrive on the returned channel; on_done runs on the loop.
        `arrived`: the HTTP layer had the request; `queued`: it asked for its turn (timings.now())."""
        loop = asyncio.get_running_loop()
        channel = self._channels(loop)
        times = Timings(arrived, queued if queued is not None else timings.now())

        def job() -> None:
            self._current = channel
            try:
                if self._stopping:
                    raise ServiceUnavailable("The server is shutting down.", retry_after=5)
                self._runner(self._slot, request, entry, channel, times)
            except TholosError as exc:
                channel.put(exc)
            except BaseException as exc:
                log.exception("generation failed: %s", exc.__class__.__name__)
                channel.put(ServerError(f"The engine failed ({exc.__class__.__name__})."))
            finally:
                self._current = None
                channel.close()
                _call_soon(loop, on_done)

        self._jobs.put(job)
        return channel

    async def count_tokens(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        """The prompt's length as submit() would render it, without a turn or the weights."""
        return await self._counter.count(request, entry)

    # -- the engine thread --
    def _main(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_left())
            except queue.Empty:  # nothing queued or running for --idle-unload seconds
                job = self._unload_idle
            if job is None:
                break
            try:
                job()  # once stopping, a queued request fails fast with 503 and still reports done
            except Exception as exc:  # never let the thread die: every queued request would hang
                log.error("engine job ended abnormally: %s", exc.__class__.__name__, exc_info=exc)
            self._idle_since = time.monotonic()
        self._slot.unload(self._save_by)

    def _idle_left(self) -> float | None:
        """Seconds until idle unload is due; None: wait for a job however long it takes."""
        if self._idle_unload <= 0 or self._slot.loaded_id is None or self._stopping:
            return None
        left = max(0.0, self._idle_since + self._idle_unload - time.monotonic())
        return None if left >= threading.TIMEOUT_MAX else left  # queue.get overflows past it

    def _unload_idle(self) -> None:
        """Free the model after --idle-unload: its prompt cache goes to disk, memory back to the OS."""
        if self._slot.loaded_id is None or self._stopping:
            return
        log.info("idle for %.0f s", self._idle_unload)
        self._slot.unload()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run callback on the loop; at shutdown the loop may be closed already: nobody waits then."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
