"""`tholos-mlx bench`: raw mlx-lm beside the server and a peer, the server's ceiling, the prompt cache.

The package: compare (raw, server and peer, run by run), cached (the prompt cache), ceiling
(the HTTP path with a zero-cost engine), stats (medians, bootstrap intervals), report (JSON,
Markdown, PNG), synthetic (random-weight standard shapes), peer, server, client, raw, prompts.
MLX is imported only once a case that needs it runs: cli.py builds this parser on every command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tholos_mlx.bench.client import BenchError, Endpoint
from tholos_mlx.bench.peer import PeerSpec
from tholos_mlx.bench.synthetic import SHAPES
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


def _runs(text: str) -> int | None:
    return None if text == "auto" else _count(1)(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _url(text: str) -> Endpoint:
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None


def _port(text: str) -> int:
    value = _count(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench flags."""
    # A description is not %-formatted (only help strings are): one % prints as one.
    p.description = (
        "Measure raw mlx-lm and the real server side by side on one model (--compare, the "
        "default), with a peer server on the same prompts (--peer, --peer-url), "
        "the server's own ceiling with a zero-cost engine (--ceiling), and the prompt cache "
        "(--cached-prefix). Every ratio comes with a 95% confidence interval. Results go to OUT "
        "as JSON, Markdown and a PNG chart (with matplotlib)."
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
        "--restart",
        action="store_true",
        help="TTFT of a long prompt cold, then after a restart that reads the disk prompt cache",
    )
    p.add_argument(
        "--structured",
        action="store_true",
        help="seconds to a complete JSON-schema answer, constrained beside only prompted",
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
        "--synthetic",
        default=None,
        metavar="SHAPE",
        help="benchmark a random-weight 4-bit model of a standard shape instead: "
        "llama-1b, llama-3b, llama-8b (or tiny), with --model's tokenizer; built in a temp folder",
    )
    p.add_argument(
        "--peer",
        choices=["mlx_lm"],
        default=None,
        help="also start mlx-lm's own server on the same model folder and compare with it",
    )
    p.add_argument(
        "--peer-url",
        type=_url,
        default=None,
        metavar="URL",
        help="compare with an OpenAI-compatible server already running here "
        "(LM Studio, Ollama, llama-server), e.g. http://127.0.0.1:1234/v1; needs --peer-model",
    )
    p.add_argument(
        "--peer-model",
        default=None,
        metavar="NAME",
        help="the model name to ask the --peer-url server for",
    )
    p.add_argument(
        "--runs",
        type=_runs,
        default=5,
        metavar="N|auto",
        help="measured runs per figure (default 5); auto: until every ratio's 95%% interval "
        "is within ±3%%, or --max-seconds",
    )
    p.add_argument(
        "--max-seconds",
        type=_seconds,
        default=900.0,
        metavar="S",
        help="with --runs auto: the time cap of the comparison's measured runs (default 900)",
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


def _peer(args: argparse.Namespace) -> PeerSpec | None:
    if args.peer and args.peer_url:
        raise UsageError("--peer and --peer-url: choose one peer")
    if args.peer_url and not args.peer_model:
        raise UsageError("--peer-url needs --peer-model NAME: the model to ask that server for")
    if args.peer_model and not args.peer_url:
        raise UsageError("--peer-model goes with --peer-url")
    if args.peer_url:
        return PeerSpec("url", args.peer_url, args.peer_model)
    return PeerSpec("mlx_lm") if args.peer else None


def command(args: argparse.Namespace, home: Path) -> int:
    """Run the chosen cases, print their headline figures, write the result files."""
    peer = _peer(args)
    args.compare = args.compare or peer is not None  # a peer is a side of the comparison
    if not (args.compare or args.ceiling or args.cached_prefix or args.structured or args.restart):
        args.compare = True
    if args.synthetic and args.synthetic not in SHAPES:
        raise UsageError(f"--synthetic {args.synthetic}: choose one of {', '.join(SHAPES)}")
    wants_model = args.compare or args.cached_prefix or args.structured or args.restart
    entry = _model(home, args.model) if wants_model else None
    from tholos_mlx.bench import cached, compare, raw, report  # MLX loads here, not at parse time

    result: dict[str, Any] = {
        "schema": report.SCHEMA,
        **report.environment(raw.device()),
    }
    result["compare"] = result["cached_prefix"] = result["ceiling"] = None
    result["structured_output"] = result["after_restart"] = None
    with tempfile.TemporaryDirectory(prefix="tholos-bench-") as tmp:
        logs = Path(tmp)
        try:
            if entry and args.synthetic:
                home, entry = _synthetic(args.synthetic, entry, Path(tmp))
            result["model"] = compare.model_info(entry) if entry else None
            if args.compare and entry:
                result["compare"] = compare.compare(args, home, entry, logs, peer)
            if args.cached_prefix and entry:
                result["cached_prefix"] = cached.cached_prefix(args, home, entry, logs)
            if args.restart and entry:
                from tholos_mlx.bench import restart

                result["after_restart"] = restart.after_restart(args, entry, logs)
            if args.structured and entry:
                from tholos_mlx.bench import structured

                result["structured_output"] = structured.structured_output(args, home, entry, logs)
            if args.ceiling:
                runs = args.runs or 5
                compare.say(
                    f"ceiling: {args.ceiling_tokens:,} tokens per stream, {runs} runs per mode"
                )
                from tholos_mlx.bench import ceiling

                result["ceiling"] = ceiling.measure(
                    args.ceiling_tokens, runs, args.warmup, args.profile, logs
                )
        except BenchError as exc:
            print(f"tholos-mlx bench: {exc}", file=sys.stderr)
            return 1
    paths = report.write(result, args.out)
    print(report.headlines(result))
    for path in paths:
        print(f"wrote {path}")
    if result["compare"] and not any(p.suffix == ".png" for p in paths):
        print("no chart: matplotlib is not installed (pip install 'tholos-mlx[bench]')")
    return 0


def _synthetic(shape: str, tokenizer_from: ModelEntry, tmp: Path) -> tuple[Path, ModelEntry]:
    """A home in `tmp` holding a random-weight model of this shape; that home and its entry."""
    from tholos_mlx.bench import synthetic
    from tholos_mlx.bench.compare import say

    home = tmp / "home"
    folder = home / "models" / f"synthetic-{shape}"
    say(f"synthetic: building a random-weight 4-bit {shape} with {tokenizer_from.id}'s tokenizer")
    synthetic.build(shape, tokenizer_from.path, folder)
    return home, ModelEntry(folder.name, "synthetic", folder)


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
