"""Server-sent event framing shared by the dialects: data lines, named events, keepalives."""

from __future__ import annotations

from typing import Any

import orjson

from tholos_mlx.errors import ServerError, TholosError

DONE: bytes = b"data: [DONE]\n\n"
KEEPALIVE: bytes = b": keepalive\n\n"  # a comment: every SSE client ignores it


def data(obj: Any) -> bytes:
    """One unnamed event carrying a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def event(name: str, obj: Any) -> bytes:
    """One named event (`event: NAME`) carrying a JSON object."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def as_tholos(exc: BaseException) -> TholosError:
    """An engine failure as the error a stream reports (never its internals)."""
    return exc if isinstance(exc, TholosError) else ServerError("The engine failed.")
