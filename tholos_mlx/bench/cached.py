"""The cached-prefix case: a long shared system prompt, different questions, prompt cache on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tholos_mlx.bench.client import StreamStats, stream_chat
from tholos_mlx.bench.compare import figures, say
from tholos_mlx.bench.peer import chat_payload
from tholos_mlx.bench.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio, summary
from tholos_mlx.tiers import ModelEntry


def cached_prefix(
    args: argparse.Namespace, home: Path, entry: ModelEntry, logs: Path
) -> dict[str, Any]:
    """A long shared system prompt, different questions, via the server with its prompt cache."""
    from tholos_mlx.bench import prompts
    from tholos_mlx.bench.raw import load_tokenizer

    tokenizer = load_tokenizer(entry.path)
    system = prompts.shared_system(tokenizer, args.prefix_tokens)
    gen = 4  # only the time to the first token matters here
    runs = args.runs or 5  # --runs auto: five warm requests say enough here
    say(f"cached prefix: {args.prefix_tokens}-token prompts, 1 cold + {runs} warm requests")
    results: list[dict[str, Any]] = []
    with tholos_server(home, entry, args.port, False, logs / "server-cached.log") as server:
        for _ in range(args.warmup):  # a different prompt: warms the server, shares no real prefix
            _chat(server, entry, [{"role": "user", "content": "Say hi."}], 1)
        for i in range(1 + runs):
            run = _chat(server, entry, prompts.question_chat(system, i), gen)
            fig = figures(run, gen)
            if fig["ttft_s"] is None:  # an empty answer: the stream's end is the nearest
                fig["ttft_s"] = run.ended_at - run.sent_at
            results.append(fig)
            say(
                f"  {'cold' if i == 0 else 'warm'} {i}: TTFT {fig['ttft_s']:.3f} s, "
                f"{fig['cached_tokens']} of {fig['prompt_tokens']} prompt tokens cached"
            )
    keep = ("ttft_s", "prompt_tokens", "cached_tokens", "completion_tokens")
    cold, warm = results[0], results[1:]
    warm_ttft = summary([w["ttft_s"] for w in warm])
    return {
        "prefix_tokens": args.prefix_tokens,
        "prompt_tokens": cold["prompt_tokens"],
        "cold": {k: cold[k] for k in keep},
        "warm": [{k: w[k] for k in keep} for w in warm],
        "warm_ttft_s": warm_ttft,
        "warm_cold_ratio": ratio(warm_ttft["median"], cold["ttft_s"]),
        "target_ratio": 0.10,
    }


def _chat(
    server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], max_tokens: int
) -> StreamStats:
    return stream_chat(server.endpoint, chat_payload(entry.id, messages, max_tokens))
