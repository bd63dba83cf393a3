"""The import rule of STYLE.md: the HTTP side never imports MLX or the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT = [
    "app",
    "api",
    "api.exchange",
    "api.fields",
    "api.gathered",
    "api.openai_chat",
    "api.sse",
    "request",
    "events",
    "admission",
    "channel",
    "tiers",
    "home",
    "errors",
    "config",
    "prompt_cache",
    "schema_check",
]
FORBIDDEN = ("mlx", "mlx_lm", "tholos_mlx.engine")

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*modules: str) -> list[str]:
    """Every module in sys.modules after a fresh interpreter imports these."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return list(json.loads(out.stdout))


def heavy(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_the_http_side_imports_neither_mlx_nor_the_engine() -> None:
    # One interpreter importing them all: any one of them alone imports a subset of this.
    loaded = imported_by(*(f"tholos_mlx.{m}" for m in LIGHT))
    assert all(f"tholos_mlx.{m}" in loaded for m in LIGHT)
    assert heavy(loaded) == []


def test_the_check_recognises_mlx_and_the_engine() -> None:
    """Guards the guard without paying for an MLX import."""
    assert heavy(
        [
            "mlx",
            "mlx.core",
            "mlx_lm.generate",
            "tholos_mlx.engine",
            "json",
            "mlxtra",
            "tholos_mlx.engine_notes",
        ]
    ) == ["mlx", "mlx.core", "mlx_lm.generate", "tholos_mlx.engine"]
