"""What the launchd and systemd tests share: serve flags as the CLI hands them, fake /health
and a fake clock, so waiting for a server never takes real time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tholos_mlx import config
from tholos_mlx.config import SERVE_FLAGS, Settings


def flags(**given: Any) -> dict[str, Any]:
    """The serve flags as cli.serve_flags hands them over: None for each one not given."""
    return {**dict.fromkeys(SERVE_FLAGS), **given}


def settings_for(home: Path, given: dict[str, Any]) -> Settings:
    """Settings the way the CLI builds them."""
    return config.build(home, given)


class FakeHealth:
    """A /health probe that answers at once and remembers what it was asked."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.calls: list[tuple[int, str]] = []

    def __call__(self, port: int, key: str) -> bool:
        self.calls.append((port, key))
        return self.healthy


class FakeClock:
    """time.monotonic and time.sleep on pretend time; `on_sleep` runs after each sleep."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)
