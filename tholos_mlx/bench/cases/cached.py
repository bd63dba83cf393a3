"""The cached-prefix case: a long shared system prompt, different questions, prompt cache on."""

from __future__ import annotations

from pathlib import Path

from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import say
from tholos_mlx.bench.results import CACHED_TARGET, Cached, CachedRun, StreamFigures
from tholos_mlx.bench.sides.client import StreamStats, chat_payload, figures, stream_chat
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio, summary
from tholos_mlx.tiers import ModelEntry


def cached_prefix(plan: Plan, home: Path, entry: ModelEntry, logs: Path) -> Cached:
    """A long shared system prompt, different questions, via the server with its prompt cache."""
    from tholos_mlx.bench import prompts
    from tholos_mlx.bench.sides.raw import load_tokenizer

    tokenizer = load_tokenizer(entry.path)
    system = prompts.shared_system(tokenizer, plan.prefix_tokens)
    gen = 4  # only the time to the first token matters here
    runs = plan.runs or 5  # --runs auto: five warm requests say enough here
    say(f"cached prefix: {plan.prefix_tokens}-token prompts, 1 cold + {runs} warm requests")
    results: list[StreamFigures] = []
    with tholos_server(home, entry, plan.port, False, logs / "server-cached.log") as server:
        for _ in range(plan.warmup):  # a different prompt: warms the server, shares no real prefix
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
    cold, warm = results[0], results[1:]
    warm_ttft = summary([w["ttft_s"] for w in warm])
    return {
        "prefix_tokens": plan.prefix_tokens,
        "prompt_tokens": cold["prompt_tokens"],
        "cold": _kept(cold),
        "warm": [_kept(w) for w in warm],
        "warm_ttft_s": warm_ttft,
        "warm_cold_ratio": ratio(warm_ttft["median"], cold["ttft_s"]),
        "target_ratio": CACHED_TARGET,
    }


def _kept(fig: StreamFigures) -> CachedRun:
    return {
        "ttft_s": fig["ttft_s"],
        "prompt_tokens": fig["prompt_tokens"],
        "cached_tokens": fig["cached_tokens"],
        "completion_tokens": fig["completion_tokens"],
    }


def _chat(
    server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], max_tokens: int
) -> StreamStats:
    return stream_chat(server.endpoint, chat_payload(entry.id, messages, max_tokens))
