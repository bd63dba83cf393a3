"""The disk prompt cache case: a long prompt answered cold, the server restarted, the same prompt again.

Both servers run on a temporary THOLOS_HOME whose tiers.toml points at the model's folder, so
the cache they write never touches the user's own; the first is stopped with SIGTERM, which
saves its prompt cache to disk, and the second reads it back when it loads the model.
"""

from __future__ import annotations

from pathlib import Path

from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import say
from tholos_mlx.bench.results import RESTART_TARGET_SPEEDUP, Restart, RestartRun, StreamFigures
from tholos_mlx.bench.sides.client import StreamStats, chat_payload, figures, stream_chat
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio
from tholos_mlx.tiers import ModelEntry


def after_restart(plan: Plan, entry: ModelEntry, logs: Path) -> Restart:
    """TTFT of one long prompt cold, then again on a restarted server with the disk cache."""
    from tholos_mlx.bench import prompts
    from tholos_mlx.bench.sides.raw import load_tokenizer

    home = logs / "restart-home"
    home.mkdir()
    (home / "tiers.toml").write_text(
        f'[models.{entry.id}]\npath = "{entry.path.resolve()}"\ntier = "{entry.tier}"\n',
        encoding="utf-8",
    )
    system = prompts.shared_system(load_tokenizer(entry.path), plan.prefix_tokens)
    ask = prompts.question_chat(system, 0)
    flags = ("--disk-cache-gb", "1")
    say(f"prompt cache across a restart: a {plan.prefix_tokens}-token prompt, cold then warm")
    runs: dict[str, StreamFigures] = {}
    for label in ("cold", "after_restart"):
        log = logs / f"server-{label}.log"
        with tholos_server(home, entry, plan.port, False, log, flags) as server:
            _chat(server, entry, [{"role": "user", "content": "Say hi."}], 1)  # warm the kernels
            runs[label] = figures(_chat(server, entry, ask, 4), 4)
        say(
            f"  {label}: TTFT {runs[label]['ttft_s']:.3f} s, {runs[label]['cached_tokens']} "
            f"of {runs[label]['prompt_tokens']} prompt tokens cached"
        )
    cold, warm = runs["cold"], runs["after_restart"]
    return {
        "prefix_tokens": plan.prefix_tokens,
        "cold": _kept(cold),
        "after_restart": _kept(warm),
        "speedup": ratio(cold["ttft_s"], warm["ttft_s"]),
        "target_speedup": RESTART_TARGET_SPEEDUP,
        "disk_files": sorted(p.name for p in (home / "cache").rglob("*") if p.is_file()),
    }


def _kept(fig: StreamFigures) -> RestartRun:
    return {
        "ttft_s": fig["ttft_s"],
        "prompt_tokens": fig["prompt_tokens"],
        "cached_tokens": fig["cached_tokens"],
    }


def _chat(
    server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], max_tokens: int
) -> StreamStats:
    return stream_chat(server.endpoint, chat_payload(entry.id, messages, max_tokens))
