"""The flags of `tholos-mlx bench`, each checked as it is parsed (bad ones exit 2 with one line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tholos_mlx.bench.plan import WORKLOADS
from tholos_mlx.bench.sides.client import Endpoint

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
        "the server's own ceiling with a zero-cost engine (--ceiling), the prompt cache "
        "(--cached-prefix, --restart, --agent-turn), speculative decoding (--workload) and "
        "several ranks (--hostfile). Every ratio comes with a 95% confidence interval. Results go to OUT "
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
        "--workload",
        choices=WORKLOADS,
        default=None,
        help="speculative decoding on beside off, on prompts whose answers copy a lot (edit: a "
        "file rewritten, a JSON document echoed, a quote) or little (prose)",
    )
    p.add_argument(
        "--num-draft-tokens",
        type=_count(1),
        default=None,
        metavar="N",
        help="with --workload: the draft depth of the speculating server (default: its own)",
    )
    p.add_argument(
        "--agent-turn",
        action="store_true",
        help="TTFT of an agent's second turn whose system prompt's first line changed (Claude "
        "Code's billing header), beside the same turn with that line unchanged",
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
        "--hostfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="compare with our server started as `serve --hostfile FILE` (one rank per host) "
        "beside one process",
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
        help="size of the shared system prompt of --cached-prefix, --restart and --agent-turn "
        "(default 1500)",
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
