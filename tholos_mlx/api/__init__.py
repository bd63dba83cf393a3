"""The wire dialects: each module translates its format to the one GenerationRequest and back from events.

A dialect is a `Dialect`: the paths it owns (their errors come in its shape) and a `mount` that
adds its routes. `app.create_app` mounts every dialect it is given; the engine, the queue and the
other dialects never change when one is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tholos_mlx.errors import TholosError


@dataclass(frozen=True)
class Dialect:
    """One wire format: its routes, and how its errors look."""

    name: str
    prefixes: tuple[str, ...]  # request paths whose errors this dialect renders
    mount: Callable[[Any], None]  # adds the routes to a Sanic app
    error_body: Callable[[TholosError], dict[str, object]]

    def owns(self, path: str) -> bool:
        """Whether a request path belongs to this dialect."""
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)
