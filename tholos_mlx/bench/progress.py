"""Progress lines of a bench run: on stderr, so stdout holds only the results; never prompt text."""

from __future__ import annotations

import sys

from tholos_mlx.bench.render.numbers import fmt

__all__ = ["fmt", "say"]


def say(line: str) -> None:
    """Print one progress line."""
    print(line, file=sys.stderr, flush=True)
