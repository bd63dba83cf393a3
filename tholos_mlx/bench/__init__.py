"""`tholos-mlx bench`: raw mlx-lm beside the server, the server's own ceiling, the prompt cache.

MLX is imported only once a case that needs it runs: cli.py builds this parser on every command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tholos_mlx.bench.client import BenchError
from tholos_mlx.bench.report import num
from tholos_mlx.errors import ModelNotFound, UsageError
from tholos_mlx.tiers import ModelEntry, TierTable

DEFAULT_OUT = Path("benchmarks") / "results"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of whole numbers: {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"prompt sizes must be 1 or more: {text!r}")
    return sizes


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more: {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    value = _count(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench flags."""
    p.description = (
        "Measure raw mlx-lm and the real server side by side on one model (--compare, the "
        "default), "
        "the server's own ceiling with a zero-cost engine (--ceiling), and the prompt cache "
        "(--cached-prefix). Results go to OUT as JSON, Markdown and a PNG chart (with matplotlib)."
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="ID",
        help="model id or tier (default: the first installed)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="raw mlx-lm vs the server (the default when no case is named)",
    )
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="the server's ceiling: the real HTTP/SSE path in front of a zero-cost engine",
    )
    p.add_argument(
        "--cached-prefix",
        action="store_true",
        help="TTFT of requests sharing a long system prompt, cold then warm (prompt cache on)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=_sizes,
        default=[32, 512, 2048],
        metavar="N,N,...",
        help="prompt sizes in tokens, chat template included (default 32,512,2048)",
    )
    p.add_argument(
        "--gen-tokens",
        type=_count(2),
        default=128,
        metavar="N",
        help="tokens to generate per run (default 128)",
    )
    p.add_argument(
        "--runs",
        type=_count(1),
        default=5,
        metavar="N",
        help="measured runs per figure (default 5)",
    )
    p.add_argument(
        "--warmup",
        type=_count(0),
        default=1,
        metavar="N",
        help="discarded warm-up runs before them (default 1)",
    )
    p.add_argument(
        "--ceiling-tokens",
        type=_count(1),
        default=200_000,
        metavar="N",
        help="tokens per ceiling stream (default 200000)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="with --ceiling: profile the server's per-token path (cProfile) into the results",
    )
    p.add_argument(
        "--prefix-tokens",
        type=_count(16),
        default=1500,
        metavar="N",
        help="size of the shared system prompt for --cached-prefix (default 1500)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where results are written (default ./{DEFAULT_OUT})",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=None,
        metavar="P",
        help="port for the benchmark's own server (default: a free one)",
    )


def command(args: argparse.Namespace, home: Path) -> int:
    """Run the chosen cases, print their headline figures, write the result files."""
    if not (args.compare or args.ceiling or args.cached_prefix):
        args.compare = True
    entry = _model(home, args.model) if (args.compare or args.cached_prefix) else None
    from tholos_mlx.bench import compare, raw, report  # MLX loads here, not at parse time

    result: dict[str, Any] = {
        "schema": report.SCHEMA,
        **report.environment(raw.device()),
    }
    result["model"] = compare.model_info(entry) if entry else None
    result["compare"] = result["cached_prefix"] = result["ceiling"] = None
    with tempfile.TemporaryDirectory(prefix="tholos-bench-") as tmp:
        logs = Path(tmp)
        try:
            if args.compare and entry:
                result["compare"] = compare.compare(args, home, entry, logs)
            if args.cached_prefix and entry:
                result["cached_prefix"] = compare.cached_prefix(args, home, entry, logs)
            if args.ceiling:
                compare.say(
                    f"ceiling: {args.ceiling_tokens:,} tokens per stream, {args.runs} runs per mode"
                )
                from tholos_mlx.bench import ceiling

                result["ceiling"] = ceiling.measure(
                    args.ceiling_tokens, args.runs, args.warmup, args.profile, logs
                )
        except BenchError as exc:
            print(f"tholos-mlx bench: {exc}", file=sys.stderr)
            return 1
    paths = report.write(result, args.out)
    print(_headlines(result))
    for path in paths:
        print(f"wrote {path}")
    if result["compare"] and not any(p.suffix == ".png" for p in paths):
        print("no chart: matplotlib is not installed (pip install 'tholos-mlx[bench]')")
    return 0


def _model(home: Path, name: str | None) -> ModelEntry:
    table = TierTable(home)
    if name:
        try:
            return table.resolve(name)
        except ModelNotFound:
            raise UsageError(
                f"--model {name}: no such model or tier; `tholos-mlx models` lists them"
            ) from None
    entries = table.entries()
    if not entries:
        raise UsageError(f"no model is installed in {home}; `tholos-mlx import-gguf` adds one")
    return entries[0]


def _headlines(result: dict[str, Any]) -> str:
    """The figures a reader wants first, one per line."""
    m = result["machine"]
    lines = [f"{m['chip']} ({m['mlx_device']}), {result['date']}"]
    compare = result.get("compare")
    if compare:
        for case in compare["cases"]:
            raw, srv, r = case["raw"], case["server"], case["ratio"]
            lines.append(
                f"prompt {case['prompt_tokens']:>6}: TTFT raw {num(raw['ttft_s']['median'], 3)} s, "
                f"server {num(srv['ttft_s']['median'], 3)} s (x{num(r['ttft'], 3)}); decode raw "
                f"{num(raw['decode_tps']['median'])} tok/s, "
                f"server {num(srv['decode_tps']['median'])} tok/s (x{num(r['decode_tps'], 3)})"
            )
        s = compare["summary"]
        lines.append(
            f"server/raw: decode {num(s['decode_ratio'], 3)} (target >= 0.98), "
            f"TTFT {num(s['ttft_ratio'], 3)}"
        )
    cached = result.get("cached_prefix")
    if cached:
        lines.append(
            f"cached prefix: cold TTFT {num(cached['cold']['ttft_s'], 3)} s, warm "
            f"{num(cached['warm_ttft_s']['median'], 3)} s, "
            f"warm/cold {num(cached['warm_cold_ratio'], 3)} (target <= 0.10)"
        )
    ceiling = result.get("ceiling")
    if ceiling:
        ls = ceiling["modes"]["lockstep"]
        lines.append(
            f"ceiling: {ceiling['tokens_per_s']:,.0f} tokens/s to one client; one token per frame "
            f"{ls['tokens_per_s']['median']:,.0f} tokens/s with {ceiling['us_per_token']:.1f} µs "
            f"of event-loop CPU a token; target {ceiling['target_tokens_per_s']:,} tokens/s and "
            f"< {ceiling['target_us_per_token']:g} µs: "
            f"{'met' if ceiling['meets_target'] else 'missed'}"
        )
    return "\n".join(lines)
