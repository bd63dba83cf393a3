"""The cases that run the real model: raw mlx-lm beside the server, and the cached prefix."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tholos_mlx.bench.client import StreamStats, free_port, stream_chat
from tholos_mlx.bench.report import num, ratio, stats
from tholos_mlx.bench.server import ServerProcess
from tholos_mlx.errors import UsageError
from tholos_mlx.tiers import ModelEntry


def say(line: str) -> None:
    """A progress line (never prompt text), on stderr so that stdout holds only the results."""
    print(line, file=sys.stderr, flush=True)


def model_info(entry: ModelEntry) -> dict[str, Any]:
    """What a result records of the model: id, tier, size, quantization, context."""
    weights = sum(p.stat().st_size for p in entry.path.glob("*.safetensors"))
    try:
        config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    quant = config.get("quantization") or {}
    return {
        "id": entry.id,
        "tier": entry.tier,
        "folder": entry.path.name,
        "model_type": config.get("model_type"),
        "weights_bytes": weights,
        "weights_mib": weights / 2**20,
        "quantization_bits": quant.get("bits"),
        "context": config.get("max_position_embeddings"),
    }


def _serve_args(home: Path, port: int, entry: ModelEntry, cache_off: bool) -> list[str]:
    args = ["tholos_mlx", "serve", "--home", str(home), "--port", str(port), "--model", entry.id]
    return args + (["--prompt-cache-mb", "0"] if cache_off else [])


def _server(
    home: Path, entry: ModelEntry, port: int | None, cache_off: bool, log: Path
) -> ServerProcess:
    from tholos_mlx.home import ensure_key

    port = port or free_port()
    return ServerProcess(_serve_args(home, port, entry, cache_off), port, ensure_key(home), log)


def _chat(
    server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], max_tokens: int
) -> StreamStats:
    return stream_chat(
        server.port,
        server.key,
        {
            "model": entry.id,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )


def _server_figures(run: StreamStats, gen_tokens: int) -> dict[str, Any]:
    """Client-side figures of one streamed request."""
    usage = run.usage or {}
    tokens = int(usage.get("completion_tokens", 0))  # type: ignore[call-overload]
    details = usage.get("prompt_tokens_details") or {}
    first, last = run.first_content_at, run.last_content_at
    span = (last - first) if first is not None and last is not None else 0.0
    return {
        "ttft_s": (first - run.sent_at) if first is not None else None,
        "decode_tps": (tokens - 1) / span if tokens > 1 and span > 0 else None,
        "completion_tokens": tokens,
        "prompt_tokens": usage.get("prompt_tokens"),
        "cached_tokens": details.get("cached_tokens", 0) if isinstance(details, dict) else 0,
        "stopped_early": tokens < gen_tokens,
    }


def compare(args: argparse.Namespace, home: Path, entry: ModelEntry, logs: Path) -> dict[str, Any]:
    """Raw mlx-lm and the server (prompt cache off) on the same prompts, alternating runs."""
    from tholos_mlx import machine
    from tholos_mlx.bench import prompts as bench_prompts
    from tholos_mlx.bench.raw import RawModel

    gen = args.gen_tokens
    info = model_info(entry)
    if info["context"] and max(args.prompt_tokens) + gen > info["context"]:
        raise UsageError(
            f"prompt + generated tokens exceed the model's context of {info['context']} tokens"
        )
    say(f"compare: loading {entry.id} for raw mlx-lm")
    raw = RawModel(entry.path)
    prompts = {n: bench_prompts.counting_prompt(raw.tokenizer, n) for n in args.prompt_tokens}
    weights = info["weights_bytes"]
    # Alternating runs share a busy machine's ups and downs; that needs two copies in memory.
    interleave = 4 * weights < machine.total_memory_bytes()
    raw_runs: dict[int, list[Any]] = {n: [] for n in args.prompt_tokens}
    srv_runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.prompt_tokens}
    server = _server(home, entry, args.port, True, logs / "server.log")
    total = args.warmup + args.runs

    def raw_once(n: int, i: int) -> None:
        run = raw.run(prompts[n][1], gen)
        say(
            f"  prompt {n}: raw    {i + 1}/{total}: TTFT {run.ttft_s:.3f} s, "
            f"decode {num(run.decode_tps)} tok/s"
        )
        if i >= args.warmup:
            raw_runs[n].append(run)

    def srv_once(n: int, i: int) -> None:
        fig = _server_figures(_chat(server, entry, prompts[n][0], gen), gen)
        say(
            f"  prompt {n}: server {i + 1}/{total}: TTFT {num(fig['ttft_s'], 3)} s, "
            f"decode {num(fig['decode_tps'])} tok/s, {fig['completion_tokens']} tokens"
        )
        if i >= args.warmup:
            srv_runs[n].append(fig)

    say(f"compare: starting the server ({'interleaved with' if interleave else 'after'} raw runs)")
    if interleave:
        with server:
            for n in args.prompt_tokens:
                for i in range(total):
                    raw_once(n, i)
                    srv_once(n, i)
            rss = server.rss_bytes()
        raw.close()
    else:
        for n in args.prompt_tokens:
            for i in range(total):
                raw_once(n, i)
        raw.close()
        with server:
            for n in args.prompt_tokens:
                for i in range(total):
                    srv_once(n, i)
            rss = server.rss_bytes()
    cases = [_case(n, len(prompts[n][1]), raw_runs[n], srv_runs[n]) for n in args.prompt_tokens]
    return {
        "gen_tokens": gen,
        "runs": args.runs,
        "warmup": args.warmup,
        "order": "interleaved" if interleave else "raw first, then server",
        "server_prompt_cache_mb": 0,
        "raw_eos": "masked (logits processor)",
        "cases": cases,
        "summary": {
            "decode_ratio": stats([c["ratio"]["decode_tps"] for c in cases])["median"],
            "ttft_ratio": stats([c["ratio"]["ttft"] for c in cases])["median"],
            "server_rss_mib": rss / 2**20,
        },
    }


def _case(n: int, prompt_tokens: int, raw: list[Any], srv: list[dict[str, Any]]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "ttft_s": stats([x.ttft_s for x in raw]),
        "prefill_tps": stats([x.prefill_tps for x in raw]),
        "decode_tps": stats([x.decode_tps for x in raw]),
        "peak_memory_bytes": stats([x.peak_memory_bytes for x in raw]),
        "generated_tokens": [x.tokens for x in raw],
    }
    s: dict[str, Any] = {
        "ttft_s": stats([x["ttft_s"] for x in srv]),
        "decode_tps": stats([x["decode_tps"] for x in srv]),
        "completion_tokens": [x["completion_tokens"] for x in srv],
        "prompt_tokens": [x["prompt_tokens"] for x in srv],
        "cached_tokens": [x["cached_tokens"] for x in srv],
        "stopped_early": sum(1 for x in srv if x["stopped_early"]),
    }
    return {
        "prompt_tokens": n,
        "prompt_tokens_actual": prompt_tokens,
        "raw": r,
        "server": s,
        "ratio": {
            "ttft": ratio(s["ttft_s"]["median"], r["ttft_s"]["median"]),
            "decode_tps": ratio(s["decode_tps"]["median"], r["decode_tps"]["median"]),
        },
    }


def cached_prefix(
    args: argparse.Namespace, home: Path, entry: ModelEntry, logs: Path
) -> dict[str, Any]:
    """A long shared system prompt, different questions, via the server with its prompt cache."""
    from tholos_mlx.bench import prompts as bench_prompts
    from tholos_mlx.bench.raw import load_tokenizer

    tokenizer = load_tokenizer(entry.path)
    system = bench_prompts.shared_system(tokenizer, args.prefix_tokens)
    gen = 4  # only the time to the first token matters here
    say(f"cached prefix: {args.prefix_tokens}-token prompts, 1 cold + {args.runs} warm requests")
    figures: list[dict[str, Any]] = []
    with _server(home, entry, args.port, False, logs / "server-cached.log") as server:
        for _ in range(args.warmup):  # a different prompt: warms the server, shares no real prefix
            _chat(server, entry, [{"role": "user", "content": "Say hi."}], 1)
        for i in range(1 + args.runs):
            run = _chat(server, entry, bench_prompts.question_chat(system, i), gen)
            fig = _server_figures(run, gen)
            if fig["ttft_s"] is None:  # an empty answer: the stream's end is the nearest
                fig["ttft_s"] = run.ended_at - run.sent_at
            figures.append(fig)
            say(
                f"  {'cold' if i == 0 else 'warm'} {i}: TTFT {fig['ttft_s']:.3f} s, "
                f"{fig['cached_tokens']} of {fig['prompt_tokens']} prompt tokens cached"
            )
    keep = ("ttft_s", "prompt_tokens", "cached_tokens", "completion_tokens")
    cold, warm = figures[0], figures[1:]
    warm_ttft = stats([w["ttft_s"] for w in warm])
    return {
        "prefix_tokens": args.prefix_tokens,
        "prompt_tokens": cold["prompt_tokens"],
        "cold": {k: cold[k] for k in keep},
        "warm": [{k: w[k] for k in keep} for w in warm],
        "warm_ttft_s": warm_ttft,
        "warm_cold_ratio": ratio(warm_ttft["median"], cold["ttft_s"]),
        "target_ratio": 0.10,
    }
