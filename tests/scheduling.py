"""How scripts/test shares the suite between its pytest-xdist workers: by module, npm users together."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

# Modules that install into tests/.cache/node or run JavaScript from it: one worker runs them in
# turn, so npm never rewrites node_modules under a running example.
NODE_MODULES = frozenset({"test_docs.py", "test_docs_agents.py", "test_docs_anthropic.py"})


def scope(nodeid: str) -> str:
    """The unit one worker runs whole: the test's module, or "node" for the npm users."""
    module = nodeid.split("::", 1)[0]
    return "node" if PurePosixPath(module).name in NODE_MODULES else module


def by_module(config: Any, log: Any) -> Any:
    """xdist's `loadscope` scheduler with `scope` as its grouping, so module servers start once.

    xdist's own `loadgroup` cannot merge modules under pytest 9.2 (it renames items through
    `_nodeid`, which pytest 9.2 no longer reads), so the grouping is done here.
    """
    from xdist.scheduler import LoadScopeScheduling  # only a parallel run has xdist loaded

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope(nodeid)

    return ByModule(config, log)
