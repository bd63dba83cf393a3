"""The disk prompt cache case: a long prompt answered cold, the server restarted, the same prompt again.

Both servers run on a temporary THOLOS_HOME whose tiers.toml points at the model's folder, so
the cache they write never touches the user's own; the first is stopped with SIGTERM, which
saves its prompt cache to disk, and the second reads it back when it loads the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tholos_mlx.bench.client import StreamStats, stream_chat
from tholos_mlx.bench.compare import figures, say
from tholos_mlx.bench.peer import chat_payload
from tholos_mlx.bench.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio
from tholos_mlx.tiers import ModelEntry

TARGET_SPEEDUP = 5.0  # the first token after a restart: at least 5x sooner than cold


def after_restart(args: argparse.Namespace, entry: ModelEntry, logs: Path) -> dict[str, Any]:
    """TTFT of one long prompt cold, then again on a restarted server with the disk cache."""
    from tholos_mlx.bench import prompts
    from tholos_mlx.bench.raw import load_tokenizer

    home = logs / "restart-home"
    home.mkdir()
    (home / "tiers.toml").write_text(
        f'[models.{entry.id}]\npath = "{entry.path.resolve()}"\ntier = "{entry.tier}"\n',
        encoding="utf-8",
    )
    system = prompts.shared_system(load_tokenizer(entry.path), args.prefix_tokens)
    ask = prompts.question_chat(system, 0)
    flags = ("--disk-cache-gb", "1")
    say(f"prompt cache across a restart: a {args.prefix_tokens}-token prompt, cold then warm")
    runs: dict[str, dict[str, Any]] = {}
    for label in ("cold", "after_restart"):
        log = logs / f"server-{label}.log"
        with tholos_server(home, entry, args.port, False, log, flags) as server:
            _chat(server, entry, [{"role": "user", "content": "Say hi."}], 1)  # warm the kernels
            runs[label] = figures(_chat(server, entry, ask, 4), 4)
        say(
            f"  {label}: TTFT {runs[label]['ttft_s']:.3f} s, {runs[label]['cached_tokens']} "
            f"of {runs[label]['prompt_tokens']} prompt tokens cached"
        )
    keep = ("ttft_s", "prompt_tokens", "cached_tokens")
    cold, warm = runs["cold"], runs["after_restart"]
    return {
        "prefix_tokens": args.prefix_tokens,
        "cold": {k: cold[k] for k in keep},
        "after_restart": {k: warm[k] for k in keep},
        "speedup": ratio(cold["ttft_s"], warm["ttft_s"]),
        "target_speedup": TARGET_SPEEDUP,
        "disk_files": sorted(p.name for p in (home / "cache").rglob("*") if p.is_file()),
    }


def _chat(
    server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], max_tokens: int
) -> StreamStats:
    return stream_chat(server.endpoint, chat_payload(entry.id, messages, max_tokens))
