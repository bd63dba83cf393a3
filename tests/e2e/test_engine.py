"""The engine with the real demo model, in a child process: model switching frees memory first.

Memory is MLX's own count (mx.get_active_memory / get_peak_memory), reported beside RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import DEMO_ID, ROOT

# Runs in a child: with mlx 0.32 a process that loaded a tokenizer off the main thread can
# abort at interpreter exit, so the script leaves through os._exit like `serve` does.
SWITCH = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import mlx.core as mx
    from tholos_mlx.answering import answer
    from tholos_mlx.engine import Engine
    from tholos_mlx.machine import rss_bytes
    from tholos_mlx.model_slot import ModelSlot, weights_bytes
    from tholos_mlx.tiers import ModelEntry
    from tholos_mlx.token_count import TokenCounter

    folder = Path(sys.argv[1])
    a, b = ModelEntry("a", "fast", folder), ModelEntry("b", "other", folder)
    slot = ModelSlot(prompt_cache_mb=0)
    engine = Engine(slot, answer, TokenCounter(slot))
    engine.start()
    engine.load(a)
    before, rss_before = mx.get_active_memory(), rss_bytes()
    mx.reset_peak_memory()
    engine.load(b)
    out = {
        "loaded": engine.loaded,
        "weights": weights_bytes(folder),
        "active_before": before,
        "peak_during_switch": mx.get_peak_memory(),
        "active_after": mx.get_active_memory(),
        # RSS beside MLX's own figures: on a Mac, Metal buffers do not show in RSS.
        "rss_before": rss_before,
        "rss_after": rss_bytes(),
    }
    engine.stop()
    print(json.dumps(out), flush=True)
    os._exit(0)
    """
)


def test_a_switch_releases_the_old_model_before_the_new_one_loads(demo_home: Path) -> None:
    folder = demo_home / "models" / DEMO_ID
    run = subprocess.run(
        [sys.executable, "-c", SWITCH, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    m = json.loads(run.stdout.strip().splitlines()[-1])
    assert m["loaded"] == "b"
    assert m["active_before"] >= m["weights"] * 0.8  # the first model really is in memory
    # Holding both at once would put the peak near twice the weights.
    assert m["peak_during_switch"] < m["active_before"] + m["weights"] * 0.5, m
    assert m["active_after"] < m["active_before"] + m["weights"] * 0.25, m
