"""mlx.launch, run as it ships but for one busy loop (mlx 0.32): what `serve --hostfile` starts.

mlx.launch copies its own stdin to every rank's stdin. Each rank's thread waits with
select(outputs, [the rank's stdin pipe], ..., 1.0), and a pipe with room is always writable:
the wait returns at once, every time, and the launcher spins a core for as long as the group
runs (all day, on a Mac on battery). The ranks read no stdin, so here the launcher waits on
their output alone; everything else is mlx.launch's own code. Without the module-level name
this patches (another mlx version), mlx.launch runs as shipped and one line says so.
"""

from __future__ import annotations

import select as _select
import sys
from typing import Any


def _outputs_only(
    rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """select() with no fd waited on for writing: nothing is ever written to a rank."""
    return _select.select(rlist, [], xlist, timeout)


def main() -> int:
    from mlx._distributed_utils import launch

    if getattr(launch, "select", None) is _select.select:
        launch.select = _outputs_only  # type: ignore[attr-defined]
    else:  # another mlx: its launcher may or may not still spin; say so where the log is
        print("tholos-mlx: this mlx.launch is not the one patched for its busy wait (mlx 0.32); "
              "it runs as shipped", file=sys.stderr)  # fmt: skip
    sys.argv[0] = "mlx.launch"
    return int(launch.main() or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
