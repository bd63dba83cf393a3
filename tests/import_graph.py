"""The package's import graph read from its source with ast, and the layout rules of STYLE.md over it.

Every import statement counts, at module level or inside a function, except those under
`if TYPE_CHECKING:` (they never run, so they can neither form a cycle nor load MLX).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

Graph = Mapping[str, frozenset[str]]  # module -> every module it imports (ours and others')

DIALECTS = ("openai_chat", "anthropic", "responses")  # api/ modules named after a wire format
LEAVES = ("bench", "gguf", "service")  # packages only the command line may import
HTTP_SIDE = ("app", "api")
HEAVY = ("mlx", "mlx_lm")


def read_graph(src: Path) -> dict[str, frozenset[str]]:
    """The imports of every module of the package rooted at `src` (a folder with __init__.py)."""
    files = {_module_name(src, f): f for f in sorted(src.rglob("*.py"))}
    return {
        name: frozenset(_imports(ast.parse(f.read_text(), str(f)), name, f, set(files)))
        for name, f in files.items()
    }


def _module_name(src: Path, file: Path) -> str:
    parts = [src.name, *file.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, name: str, file: Path, ours: set[str]) -> Iterable[str]:
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    for node in _running(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from pkg import name`, pkg.
                sub = f"{base}.{alias.name}"
                yield sub if sub in ours else base


def _running(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of the tree except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in (child, *_running(child)))
            continue
        yield node
        yield from _running(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _ours(graph: Graph, module: str) -> list[str]:
    return sorted(m for m in graph[module] if m in graph)


def cycles(graph: Graph) -> list[list[str]]:
    """Each strongly connected group of modules (an import cycle), as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in _ours(graph, v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1 or v in graph[v]:
                found.append(_one_cycle(graph, set(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _one_cycle(graph: Graph, group: set[str]) -> list[str]:
    """A path start -> ... -> start inside a strongly connected group, to name in a failure."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in _ours(graph, v):
                if w == start:
                    return [*paths[v], start]
                if w in group and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def dialect_of(module: str, package: str) -> str | None:
    """The wire dialect an api/ module belongs to, or None for a shared api module."""
    prefix = f"{package}.api."
    if not module.startswith(prefix):
        return None
    leaf = module.removeprefix(prefix)
    return next((d for d in DIALECTS if leaf == d or leaf.startswith(d + "_")), None)


def dialects_crossing(graph: Graph, package: str) -> list[tuple[str, str]]:
    """(importer, imported) where a dialect module imports another dialect's module."""
    return [
        (m, i)
        for m in sorted(graph)
        for i in _ours(graph, m)
        if (d := dialect_of(m, package)) and dialect_of(i, package) not in (None, d)
    ]


def leaves_reached(graph: Graph, package: str) -> list[tuple[str, str]]:
    """(importer, imported) where a leaf package is imported by anything but cli or itself."""
    out = []
    for m in sorted(graph):
        if m == f"{package}.cli":
            continue
        for i in _ours(graph, m):
            leaf = next((f"{package}.{x}" for x in LEAVES if _within(i, f"{package}.{x}")), None)
            if leaf and not _within(m, leaf):
                out.append((m, i))
    return out


def heavy_reached(graph: Graph, package: str) -> list[list[str]]:
    """For each HTTP-side module that loads MLX or the engine, one import chain that does."""
    forbidden = (*HEAVY, f"{package}.engine")
    chains = []
    for start in sorted(graph):
        if not any(_within(start, f"{package}.{h}") for h in HTTP_SIDE):
            continue
        chain = _chain_to(graph, start, lambda m: any(_within(m, f) for f in forbidden))
        if chain:
            chains.append(chain)
    return chains


def _chain_to(graph: Graph, start: str, bad: Callable[[str], bool]) -> list[str] | None:
    """The shortest import chain from start to a module `bad` accepts, following our modules."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in sorted(_loaded_by(graph, v)):
                if bad(w):
                    return [*paths[v], w]
                if w in graph and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return None


def _loaded_by(graph: Graph, module: str) -> set[str]:
    """What importing `module` runs: its imports and, for each of ours, its parent packages too."""
    out = set(graph[module])
    for m in graph[module]:
        parts = m.split(".")
        out.update(p for p in (".".join(parts[:n]) for n in range(1, len(parts))) if p in graph)
    return out
