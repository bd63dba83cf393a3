"""create_app(): the HTTP routes and the one error renderer; talks to the engine through a Protocol."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable, Protocol

import orjson
from sanic import Request, Sanic
from sanic import exceptions as sanic_exc
from sanic.response import BaseHTTPResponse, HTTPResponse

from tholos_mlx import sse
from tholos_mlx.admission import Gate
from tholos_mlx.channel import Channel, Delta, Event, Finished, Started
from tholos_mlx.config import Settings
from tholos_mlx.errors import (
    ForbiddenHost,
    InvalidApiKey,
    InvalidRequest,
    MethodNotAllowed,
    NoModelLoaded,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    TholosError,
)
from tholos_mlx.home import KeyStore
from tholos_mlx.schema import ChatRequest, completion_body, new_completion_id, parse_chat
from tholos_mlx.tiers import ModelEntry, TierTable

log = logging.getLogger("tholos.app")

KEEPALIVE_S = 10.0  # SSE comment interval while the engine is busy with a long prompt
_JSON = "application/json"
_names = itertools.count()


class EngineLike(Protocol):
    """What the HTTP layer needs from the engine (the real one, or a fake in tests)."""

    @property
    def loaded(self) -> str | None: ...

    def submit(
        self, request: ChatRequest, entry: ModelEntry | None, on_done: Callable[[], None]
    ) -> Channel: ...


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return HTTPResponse(data, status=status, headers=headers, content_type=_JSON)


def error_response(err: TholosError, headers: dict[str, str] | None = None) -> HTTPResponse:
    """Render any TholosError in OpenAI's shape with its status and hint headers."""
    extra = dict(headers or {})
    if err.retry_after is not None:
        extra["Retry-After"] = str(err.retry_after)
    elif err.status == 503:
        # No model, too large, failed to load: the OpenAI SDKs' automatic retries would only
        # repeat the failure (a failed load even unloads and reloads the working model).
        extra["x-should-retry"] = "false"
    if isinstance(err, InvalidApiKey):
        extra["WWW-Authenticate"] = "Bearer"
    return _json(err.body(), status=err.status, headers=extra)


def _wants_plain(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and _JSON not in accept


def create_app(
    settings: Settings, engine: EngineLike, gate: Gate, tiers: TierTable, keys: KeyStore
) -> Sanic[Any, Any]:
    """Build the Sanic app: routes and error rendering only, every dependency injected."""
    app = Sanic(f"tholos_{next(_names)}")
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.RESPONSE_TIMEOUT = 24 * 3600  # a long non-streamed answer is not a timeout
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 3.0
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.NOISY_EXCEPTIONS = False
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    port = settings.port
    allowed_hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    origins = frozenset(settings.allow_origins)

    def guard(request: Request) -> None:
        """Host first (DNS rebinding), then the bearer key; both on every request."""
        if request.headers.get("host", "").lower() not in allowed_hosts:
            raise ForbiddenHost(
                "This server answers only requests addressed to 127.0.0.1, localhost or [::1] "
                f"on port {port}."
            )
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not keys.matches(presented.strip()):
            raise InvalidApiKey(
                "Incorrect API key provided. Send `Authorization: Bearer KEY`; "
                "`tholos-mlx key` prints the key."
            )

    @app.on_request
    async def _check(request: Request) -> HTTPResponse | None:
        origin = request.headers.get("origin")
        if request.method == "OPTIONS" and origin in origins:
            # Echo what the browser asks for: the OpenAI JS SDK adds X-Stainless-* headers.
            asked = request.headers.get("access-control-request-headers", "")
            return HTTPResponse(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": asked or "Authorization, Content-Type, Accept",
                    "Access-Control-Max-Age": "600",
                },
            )
        guard(request)
        return None

    async def _cors(request: Request, response: BaseHTTPResponse) -> None:
        origin = request.headers.get("origin")
        if origin and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    app.register_middleware(_cors, "response")

    @app.exception(Exception)
    async def _render(request: Request, exc: Exception) -> HTTPResponse:
        err = _as_tholos(exc)
        if not isinstance(err, (ForbiddenHost, InvalidApiKey)) and not isinstance(exc, TholosError):
            try:  # routing errors happen before middleware: an unknown path still needs the key
                guard(request)
            except TholosError as denied:
                err = denied
            except Exception:  # a request too broken to check: answer the original error
                pass
        headers = {}
        if isinstance(exc, sanic_exc.MethodNotAllowed) and getattr(exc, "allowed_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.allowed_methods or ()))
        return error_response(err, headers)

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return _json({"status": "ok", "model": engine.loaded, "queue": gate.waiting})

    def model_object(entry: ModelEntry) -> dict[str, Any]:
        try:
            created = int(entry.path.stat().st_mtime)
        except OSError:
            created = 0
        return {
            "id": entry.id,
            "object": "model",
            "created": created,
            "owned_by": "tholos",
            "tier": entry.tier,
            "loaded": entry.id == engine.loaded,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> HTTPResponse:
        return _json({"object": "list", "data": [model_object(e) for e in tiers.entries()]})

    @app.get("/v1/models/<model_id:path>")
    async def model(request: Request, model_id: str) -> HTTPResponse:
        for entry in tiers.entries():
            if entry.id == model_id:
                return _json(model_object(entry))
        raise tiers.not_found(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> HTTPResponse | None:
        req = parse_chat(request.body)
        entry = tiers.resolve(req.model) if req.model else None
        if entry is None and engine.loaded is None:
            raise NoModelLoaded()
        turn = await gate.acquire()
        try:
            channel = engine.submit(req, entry, turn.release)
        except BaseException:
            turn.release()
            raise
        try:
            started = await _first(channel)
            if not req.stream:
                return await _complete(request, channel, started)
            await _stream(request, channel, started, req.include_usage)
            return None
        finally:
            channel.cancel()  # the client left, or we are done: the engine stops within a token

    return app


def _as_tholos(exc: Exception) -> TholosError:
    if isinstance(exc, TholosError):
        return exc
    if isinstance(exc, sanic_exc.NotFound):
        return NotFound("Unknown path. The API lives under /v1: /v1/models, /v1/chat/completions.")
    if isinstance(exc, sanic_exc.MethodNotAllowed):
        return MethodNotAllowed(str(exc) or "Method not allowed on this path.")
    if isinstance(exc, sanic_exc.PayloadTooLarge):
        return PayloadTooLarge("The request body is larger than the 4 MiB limit.")
    if isinstance(exc, sanic_exc.SanicException) and 400 <= exc.status_code < 500:
        err = InvalidRequest(str(exc) or "Bad request.")
        err.status = exc.status_code
        return err
    log.error("unexpected error: %s", exc.__class__.__name__, exc_info=exc)
    return ServerError("The server hit an unexpected error; see its log.")


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


_STOPPED = "The generation was stopped (server shutting down)."


async def _complete(
    request: Request, channel: Channel, first: tuple[Started, list[Event]]
) -> HTTPResponse:
    started, batch = first
    texts: list[str] = []
    while True:
        for ev in batch:
            if isinstance(ev, Delta):
                texts.append(ev.text)
            elif isinstance(ev, BaseException):
                raise ev
            elif isinstance(ev, Finished):
                return _answer(request, started, "".join(texts), ev)
        batch = await channel.next_batch() or [ServiceUnavailable(_STOPPED)]


def _answer(request: Request, started: Started, text: str, finished: Finished) -> HTTPResponse:
    if _wants_plain(request):
        return HTTPResponse(text, content_type="text/plain; charset=utf-8")
    return _json(
        completion_body(
            id=new_completion_id(),
            created=int(time.time()),
            model=started.model,
            text=text,
            finish_reason=finished.finish_reason,
            usage=finished.usage,
        )
    )


async def _stream(
    request: Request, channel: Channel, first: tuple[Started, list[Event]], include_usage: bool
) -> None:
    started, batch = first
    enc = sse.ChunkEncoder(
        id=new_completion_id(),
        created=int(time.time()),
        model=started.model,
        include_usage=include_usage,
    )
    response = await request.respond(
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    out: list[bytes] = [enc.role()]
    done = False
    while True:
        # Every Delta of a batch goes out as one chunk: one write however fast the engine is.
        texts: list[str] = []
        for ev in batch:
            if isinstance(ev, Delta):
                texts.append(ev.text)
                continue
            if texts:  # text that came before the last event still goes out first
                out.append(enc.content("".join(texts)))
                texts = []
            if isinstance(ev, Finished):
                out.append(enc.finish(ev.finish_reason))
                if include_usage:
                    out.append(enc.usage(ev.usage))
                out.append(sse.DONE)
                done = True
                break
            elif isinstance(ev, BaseException):
                # After the headers an error is one event, and no [DONE] follows.
                err = ev if isinstance(ev, TholosError) else ServerError("The engine failed.")
                out.append(sse.error_frame(err))
                done = True
                break
        if texts:
            out.append(enc.content("".join(texts)))
        await response.send(b"".join(out))
        if done:
            break
        next_batch = await channel.next_batch(timeout=KEEPALIVE_S)
        if next_batch is None:  # nothing for a while (a long prompt): keep the connection open
            out, batch = [sse.KEEPALIVE], []
        else:  # [] means closed without an end: stopped at shutdown
            out, batch = [], next_batch or [ServiceUnavailable(_STOPPED)]
    await response.eof()
