"""create_app(): auth, Host and CORS checks, /health and /v1/models, the dialects' routes, one error renderer.

Shared objects live on `app.ctx` (settings, engine, gate, tiers, keys, keepalive_s); handlers
read them from there. Nothing here imports MLX or the engine: `api.exchange.EngineLike` is the
whole interface.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sanic import Request, Sanic
from sanic import exceptions as sanic_exc
from sanic.response import BaseHTTPResponse, HTTPResponse

from tholos_mlx import timings
from tholos_mlx.admission import Gate
from tholos_mlx.api import Dialect, anthropic, openai_chat, responses
from tholos_mlx.api.exchange import EngineLike
from tholos_mlx.config import Settings
from tholos_mlx.errors import (
    ForbiddenHost,
    InvalidApiKey,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TholosError,
)
from tholos_mlx.home import KeyStore
from tholos_mlx.tiers import ModelEntry, TierTable

log = logging.getLogger("tholos.app")

KEEPALIVE_S = 10.0  # SSE comment interval while the engine is busy with a long prompt
NO_RETRY_AFTER_S = (
    30  # Retry-After on a 503 that waiting alone will not cure (no model, load failed)
)
DIALECTS: tuple[Dialect, ...] = (openai_chat.DIALECT, anthropic.DIALECT, responses.DIALECT)
_JSON = "application/json"
_names = itertools.count()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return HTTPResponse(data, status=status, headers=headers, content_type=_JSON)


def error_response(
    err: TholosError, dialect: Dialect | None = None, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """Render any TholosError in its dialect's shape (OpenAI's by default) with its hint headers."""
    extra = dict(headers or {})
    if err.retry_after is not None:
        extra["Retry-After"] = str(err.retry_after)
    elif err.status == 503:
        # No model, too large, failed to load: every 503 says when to come back, but the
        # SDKs' automatic retries would only repeat the failure (a failed load even unloads
        # and reloads the working model), and they read x-should-retry first.
        extra["Retry-After"] = str(NO_RETRY_AFTER_S)
        extra["x-should-retry"] = "false"
    if isinstance(err, InvalidApiKey):
        extra["WWW-Authenticate"] = "Bearer"
    body = dialect.error_body(err) if dialect else err.body()
    return _json(body, status=err.status, headers=extra)


def create_app(
    settings: Settings,
    engine: EngineLike,
    gate: Gate,
    tiers: TierTable,
    keys: KeyStore,
    *,
    keepalive_s: float = KEEPALIVE_S,
    dialects: Sequence[Dialect] = DIALECTS,
    ranks: Callable[[], dict[str, object]] | None = None,
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
    app.ctx.settings = settings
    app.ctx.engine = engine
    app.ctx.gate = gate
    app.ctx.tiers = tiers
    app.ctx.keys = keys
    app.ctx.keepalive_s = keepalive_s
    app.ctx.dialects = tuple(dialects)
    app.ctx.ranks = ranks  # serve --hostfile: how many ranks, and which are up, for /health
    app.ctx.allowed_hosts = frozenset(
        f"{host}:{settings.port}" for host in ("127.0.0.1", "localhost", "[::1]")
    )
    app.ctx.origins = frozenset(settings.allow_origins)
    app.on_request(_check)
    app.register_middleware(_cors, "response")
    app.error_handler.add(Exception, _render)
    app.add_route(_root, "/", methods=["HEAD"], name="root")
    app.add_route(_health, "/health", methods=["GET"], name="health")
    app.add_route(_models, "/v1/models", methods=["GET"], name="models")
    app.add_route(_model, "/v1/models/<model_id:path>", methods=["GET"], name="model")
    for dialect in dialects:
        dialect.mount(app)
    return app


def _check_host(request: Request) -> None:
    """The Host header must name this machine's loopback (DNS rebinding)."""
    ctx = request.app.ctx
    if request.headers.get("host", "").lower() not in ctx.allowed_hosts:
        raise ForbiddenHost(
            "This server answers only requests addressed to 127.0.0.1, localhost or [::1] "
            f"on port {ctx.settings.port}."
        )


def _guard(request: Request) -> None:
    """Host first, then the key (Bearer, or Anthropic's x-api-key: either may carry it)."""
    _check_host(request)
    keys = request.app.ctx.keys
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    by_bearer = scheme.lower() == "bearer" and keys.matches(bearer.strip())
    by_header = keys.matches(request.headers.get("x-api-key", "").strip())
    if not (by_bearer or by_header):
        raise InvalidApiKey(
            "Incorrect API key provided. Send `Authorization: Bearer KEY` (or `x-api-key: KEY`); "
            "`tholos-mlx key` prints the key."
        )


async def _check(request: Request) -> HTTPResponse | None:
    request.ctx.arrived = timings.now()  # the start of the server's own time (timings.py)
    origin = request.headers.get("origin")
    if request.method == "OPTIONS" and origin in request.app.ctx.origins:
        _check_host(request)  # a preflight carries no key, but it must be addressed to us
        # Echo what the browser asks for: the OpenAI JS SDK adds X-Stainless-* headers.
        asked = request.headers.get("access-control-request-headers", "")
        return HTTPResponse(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": asked or "Authorization, Content-Type, Accept",
                "Access-Control-Max-Age": "600",
            },
        )
    _guard(request)
    return None


async def _cors(request: Request, response: BaseHTTPResponse) -> None:
    origin = request.headers.get("origin")
    if origin and origin in request.app.ctx.origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


async def _render(request: Request, exc: Exception) -> HTTPResponse:
    err = _as_tholos(exc, request.app.ctx.settings)
    if not isinstance(err, (ForbiddenHost, InvalidApiKey)) and not isinstance(exc, TholosError):
        try:  # routing errors happen before middleware: an unknown path still needs the key
            _guard(request)
        except TholosError as denied:
            err = denied
        except Exception:  # a request too broken to check: answer the original error
            pass
    headers = {}
    if isinstance(exc, sanic_exc.MethodNotAllowed) and getattr(exc, "allowed_methods", None):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods or ()))
    dialect = next((d for d in request.app.ctx.dialects if d.owns(request.path)), None)
    return error_response(err, dialect, headers)


def _as_tholos(exc: Exception, settings: Settings) -> TholosError:
    if isinstance(exc, TholosError):
        return exc
    if isinstance(exc, sanic_exc.NotFound):
        return NotFound(
            "Unknown path. The API lives under /v1: /v1/models, /v1/chat/completions, "
            "/v1/messages, /v1/messages/count_tokens, /v1/responses."
        )
    if isinstance(exc, sanic_exc.MethodNotAllowed):
        return MethodNotAllowed(str(exc) or "Method not allowed on this path.")
    if isinstance(exc, sanic_exc.PayloadTooLarge):
        limit = settings.max_body_bytes
        size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"
        return PayloadTooLarge(f"The request body is larger than the {size} limit.")
    if isinstance(exc, sanic_exc.SanicException) and 400 <= exc.status_code < 500:
        err = InvalidRequest(str(exc) or "Bad request.")
        err.status = exc.status_code
        return err
    log.error("unexpected error: %s", exc.__class__.__name__, exc_info=exc)
    return ServerError("The server hit an unexpected error; see its log.")


async def _root(request: Request) -> HTTPResponse:
    """HEAD /: Claude Code's first request, a check that the base URL answers."""
    return HTTPResponse(status=200)


async def _health(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    engine: EngineLike = ctx.engine
    body: dict[str, object] = {
        "status": "ok",
        "model": engine.loaded,
        "last_model": engine.last_loaded,
    }
    if ctx.ranks is not None:
        body.update(ctx.ranks())
    speculative = ctx.settings.speculative
    return _json({**body, "queue": ctx.gate.waiting, "speculative": speculative})


def _model_object(entry: ModelEntry, loaded: str | None) -> dict[str, Any]:
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
        "loaded": entry.id == loaded,
    }


async def _models(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    data = [_model_object(e, ctx.engine.loaded) for e in ctx.tiers.entries()]
    return _json({"object": "list", "data": data})


async def _model(request: Request, model_id: str) -> HTTPResponse:
    ctx = request.app.ctx
    for entry in ctx.tiers.entries():
        if entry.id == model_id:
            return _json(_model_object(entry, ctx.engine.loaded))
    raise ctx.tiers.not_found(model_id)
