"""One generation over HTTP, whatever the dialect: resolve the model, admit, submit, reply or stream.

A dialect's handler parses its body into a GenerationRequest and hands this module a Reply that
renders the engine's events in its wire format; everything else is the same for every dialect.
"""

from __future__ import annotations

from typing import Callable, Protocol

from sanic import Request
from sanic.response import HTTPResponse

from tholos_mlx import schema_check, timings
from tholos_mlx.admission import Gate
from tholos_mlx.api import sse
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.channel import Channel
from tholos_mlx.errors import NoModelLoaded, ServerError, ServiceUnavailable
from tholos_mlx.events import Event, Started
from tholos_mlx.request import GenerationRequest
from tholos_mlx.tiers import ModelEntry, TierTable

STOPPED = "The generation was stopped (server shutting down)."


class EngineLike(Protocol):
    """What the HTTP layer needs from the engine (the real one, or a fake in tests)."""

    @property
    def loaded(self) -> str | None: ...

    @property
    def last_loaded(self) -> str | None:
        """The model in memory, else the one loaded last (idle unload); None if none ever was."""
        ...

    def submit(
        self,
        request: GenerationRequest,
        entry: ModelEntry | None,
        on_done: Callable[[], None],
        arrived: float | None = None,
        queued: float | None = None,
    ) -> Channel:
        """Queue a generation; `arrived` is when the request reached the server, `queued` when
        it asked for its turn (timings.now()): the wait in line is queue time, not HTTP's."""
        ...

    async def count_tokens(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        """The request's prompt length in tokens as submit() would render it, without a turn."""
        ...


class Stream(Protocol):
    """One streamed answer in a dialect's events."""

    def head(self) -> bytes:
        """What goes out first, once the request holds the engine."""
        ...

    def render(self, batch: list[Event]) -> tuple[bytes, bool]:
        """The bytes for a batch of events, and whether the stream is complete."""
        ...

    def error(self, exc: BaseException) -> bytes:
        """The one event an error becomes after the headers were sent."""
        ...


class Reply(Protocol):
    """How a dialect answers one request."""

    def complete(self, request: Request, started: Started, answer: Gathered) -> HTTPResponse:
        """The whole answer, not streamed."""
        ...

    def stream(self, started: Started) -> Stream:
        """A stream for the answer."""
        ...


async def run(request: Request, req: GenerationRequest, reply: Reply) -> HTTPResponse | None:
    """Admit the request, run it on the engine and answer in the dialect; the engine stops if the client goes."""
    ctx = request.app.ctx
    engine: EngineLike = ctx.engine
    gate: Gate = ctx.gate
    tiers: TierTable = ctx.tiers
    entry = tiers.resolve(req.model) if req.model else None
    if entry is None and engine.last_loaded is None:
        raise NoModelLoaded()  # never had a model; after idle unload the engine reloads the last
    # A schema that cannot constrain: 400 now, not after the queue; keywords not enforced
    # in a non-strict schema: said in a header.
    extra = schema_check.warnings_header(schema_check.check(req))
    queued = timings.now()  # parsed and checked: from here on it waits for the engine
    turn = await gate.acquire()
    try:
        arrived = getattr(request.ctx, "arrived", None)
        channel = engine.submit(req, entry, turn.release, arrived, queued)
    except BaseException:
        turn.release()
        raise
    try:
        started, batch = await _first(channel)
        if not req.stream:
            response = await _complete(request, channel, started, batch, reply)
            response.headers.update(extra)
            return response
        await _stream(request, channel, batch, reply.stream(started), ctx.keepalive_s, extra)
        return None
    finally:
        channel.cancel()  # the client left, or we are done: the engine stops within a token


async def _first(channel: Channel) -> tuple[Started, list[Event]]:
    """Wait for the engine to start this request; its errors surface here, before any header."""
    while True:
        batch = await channel.next_batch()
        if batch is None:
            continue
        if not batch:
            raise ServiceUnavailable("The request was dropped before it started.", retry_after=1)
        head = batch[0]
        if isinstance(head, BaseException):
            raise head
        if isinstance(head, Started):
            return head, batch[1:]
        raise ServerError("The engine answered out of order.")


async def _complete(
    request: Request, channel: Channel, started: Started, batch: list[Event], reply: Reply
) -> HTTPResponse:
    answer = Gathered()
    while True:
        for ev in batch:
            answer.add(ev)
            if answer.finished is not None:
                return reply.complete(request, started, answer)
        batch = await channel.next_batch() or [ServiceUnavailable(STOPPED)]


async def _stream(
    request: Request,
    channel: Channel,
    batch: list[Event],
    stream: Stream,
    keepalive_s: float,
    headers: dict[str, str],
) -> None:
    response = await request.respond(
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )
    out, done = stream.render(batch)
    await response.send(stream.head() + out)
    while not done:
        next_batch = await channel.next_batch(timeout=keepalive_s)
        if next_batch is None:  # nothing for a while (a long prompt): keep the connection open
            await response.send(sse.KEEPALIVE)
            continue
        # [] means closed without an end: stopped at shutdown
        out, done = stream.render(next_batch or [ServiceUnavailable(STOPPED)])
        await response.send(out)
    await response.eof()
