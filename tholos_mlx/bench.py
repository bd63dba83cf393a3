"""`tholos-mlx bench`: tokens per second of raw mlx-lm beside the server (placeholder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tholos_mlx.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench flags."""
    p.add_argument("--model", default=None, metavar="ID")


def command(args: argparse.Namespace, home: Path) -> int:
    """Run the benchmark."""
    raise UsageError("bench is not implemented yet")
