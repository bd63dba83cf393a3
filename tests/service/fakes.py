"""What the launchd and systemd tests share: serve flags as the CLI hands them, a fake /health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tholos_mlx import config
from tholos_mlx.config import SERVE_FLAGS, Settings


def flags(**given: Any) -> dict[str, Any]:
    """The serve flags as cli.serve_flags hands them over: None for each one not given."""
    return {**dict.fromkeys(SERVE_FLAGS), **given}


def settings_for(home: Path, given: dict[str, Any]) -> Settings:
    """Settings the way the CLI builds them."""
    return config.build(home, given)


class FakeHealth:
    """A /health check that answers at once and remembers what it was asked."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.calls: list[tuple[int, str, float]] = []

    def __call__(self, port: int, key: str, timeout: float) -> bool:
        self.calls.append((port, key, timeout))
        return self.healthy
