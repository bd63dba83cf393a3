"""One process at a time fills tests/.cache: the suite's parallel workers (pytest-xdist) share it."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


@contextmanager
def held(name: str) -> Iterator[None]:
    """Wait for, then hold, the lock NAME under tests/.cache for the with-block.

    Never nest two `held` of one NAME in a process: flock locks belong to the open file, so the
    inner one would wait for the outer forever.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield
