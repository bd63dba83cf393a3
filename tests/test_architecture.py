"""The layout of STYLE.md, held by the package's own imports: no cycle, dialects apart, leaves
imported only by the command line, and an HTTP side that never loads MLX or the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.import_graph import (
    Graph,
    cycles,
    dialects_crossing,
    heavy_reached,
    leaves_reached,
    read_graph,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tholos_mlx"
GRAPH = read_graph(ROOT / PACKAGE)


def _arrows(chains: list[list[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in chains)


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(GRAPH)
    assert found == [], f"import cycles:\n{_arrows(found)}"


def test_no_dialect_imports_another_dialect() -> None:
    found = dialects_crossing(GRAPH, PACKAGE)
    assert found == [], f"a dialect imports another:\n{_arrows([list(c) for c in found])}"


def test_bench_gguf_and_service_are_imported_only_by_the_command_line() -> None:
    found = leaves_reached(GRAPH, PACKAGE)
    assert found == [], f"a leaf imported from below:\n{_arrows([list(c) for c in found])}"


def test_the_http_side_reaches_neither_mlx_nor_the_engine_through_any_import() -> None:
    found = heavy_reached(GRAPH, PACKAGE)
    assert found == [], f"the HTTP side loads MLX or the engine:\n{_arrows(found)}"


def test_the_graph_holds_every_module_and_its_function_level_imports() -> None:
    assert {f"{PACKAGE}.app", f"{PACKAGE}.cli", f"{PACKAGE}.api.sse", f"{PACKAGE}.bench"} <= set(
        GRAPH
    )
    # cli imports the engine inside _serve, never at module level.
    assert f"{PACKAGE}.engine" in GRAPH[f"{PACKAGE}.cli"]


# The rules against small synthetic graphs: each must fire where it should, and only there.


def graph(**edges: str) -> Graph:
    """graph(a="b c") -> {"p.a": {"p.b", "p.c"}, ...}: "__" stands for ".", mlx* is not ours."""
    names = {k.replace("__", ".") for k in edges} | {
        v.replace("__", ".") for vs in edges.values() for v in vs.split()
    }
    out: dict[str, frozenset[str]] = {
        f"p.{n}": frozenset() for n in names if not n.startswith("mlx")
    }
    for k, vs in edges.items():
        out[f"p.{k.replace('__', '.')}"] = frozenset(
            v.replace("__", ".") if v.startswith("mlx") else f"p.{v.replace('__', '.')}"
            for v in vs.split()
        )
    return out


def test_a_cycle_is_found_and_named_as_a_path() -> None:
    assert cycles(graph(a="b", b="c", c="a d", d="")) == [["p.a", "p.b", "p.c", "p.a"]]
    assert cycles(graph(a="a")) == [["p.a", "p.a"]]
    assert cycles(graph(a="b c", b="c", c="")) == []


def test_a_dialect_importing_another_is_found_but_not_one_of_its_own_or_a_shared_module() -> None:
    g = graph(
        api__responses_request="api__openai_chat api__responses_output api__fields",
        api__anthropic="api__anthropic_request api__sse",
        api__openai_chat="api__exchange",
    )
    assert dialects_crossing(g, "p") == [("p.api.responses_request", "p.api.openai_chat")]


def test_a_leaf_imported_by_anything_but_cli_or_itself_is_found() -> None:
    g = graph(
        cli="bench gguf__importer service",
        bench__report="bench__chart",
        models="gguf__format",
        app="service__launchd",
        benchmarks="",
    )
    assert leaves_reached(g, "p") == [("p.app", "p.service.launchd"), ("p.models", "p.gguf.format")]


def test_the_http_side_loading_mlx_through_a_shared_module_or_a_package_init_is_found() -> None:
    g = graph(
        app="api__sse",
        api__sse="errors",
        api__openai_chat="api__fields",
        api__fields="request",
        request="mlx__core",
        api__anthropic="tools__grammar",
        tools="engine",
        engine="mlx",
    )
    assert heavy_reached(g, "p") == [
        ["p.api.anthropic", "p.tools", "p.engine"],
        ["p.api.fields", "p.request", "mlx.core"],
        ["p.api.openai_chat", "p.api.fields", "p.request", "mlx.core"],
    ]
    assert heavy_reached(graph(app="api__sse errors", api__sse="errors"), "p") == []


def test_the_reader_resolves_relative_from_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    (pkg / "api").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "api" / "__init__.py").write_text("from . import sse\n")
    (pkg / "api" / "sse.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..errors import TholosError\n"
        "if TYPE_CHECKING:\n    import mlx.core\nelse:\n    import json\n"
        "def f():\n    from p import errors\n    import mlx_lm.generate\n"
    )
    assert read_graph(pkg) == {
        "p": frozenset(),
        "p.errors": frozenset(),
        "p.api": frozenset({"p.api.sse"}),
        "p.api.sse": frozenset({"typing", "p.errors", "json", "mlx_lm.generate"}),
    }


LIGHT = [
    "app",
    "api",
    "api.anthropic_request",
    "api.coalesce",
    "api.exchange",
    "api.fields",
    "api.gathered",
    "api.openai_chat",
    "api.openai_chat_request",
    "api.responses_request",
    "api.shared_openai",
    "api.sse",
    "api.validation",
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
