"""The import rule of STYLE.md: the HTTP side never imports MLX or the engine."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT = [
    "app",
    "api",
    "api.coalesce",
    "api.exchange",
    "api.fields",
    "api.gathered",
    "api.openai_chat",
    "api.shared_openai",
    "api.sse",
    "ids",
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


API = ROOT / "tholos_mlx" / "api"
DIALECTS = ("openai_chat", "anthropic", "responses")  # each with its own helper modules


def family(module: str) -> str | None:
    """The dialect an api module belongs to (its name or its prefix), or None for a shared one."""
    return next((d for d in DIALECTS if module == d or module.startswith(d + "_")), None)


def api_imports(path: Path) -> set[str]:
    """The tholos_mlx.api modules a file imports, by their short names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(
            n.removeprefix("tholos_mlx.api.") for n in names if n.startswith("tholos_mlx.api.")
        )
    return found


def test_a_dialect_never_imports_another_and_shared_api_modules_import_none() -> None:
    modules = {p.stem: api_imports(p) for p in API.glob("*.py")}
    assert all(d in modules for d in DIALECTS)
    crossings = [
        (name, imported)
        for name, imports in modules.items()
        for imported in imports
        if family(imported) is not None and family(imported) != family(name)
    ]
    assert crossings == []


def test_the_dialect_rule_recognises_a_crossing() -> None:
    """Guards the guard: the families the rule reads."""
    assert family("responses_request") == "responses" and family("anthropic") == "anthropic"
    assert family("openai_chat") == "openai_chat" and family("shared_openai") is None
    assert family("fields") is None and family("coalesce") is None
