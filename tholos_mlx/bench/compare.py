"""Raw mlx-lm, our server and (optionally) a peer server on the same prompts, run by run.

Each prompt size is a cell: its own warm-up rounds first (so kernel compilation for that shape
never lands in a figure), then measured rounds, each side once a round in a rotating order. A
round's prompt opens with a fresh nonce line, so no prompt cache serves an earlier round's
prefix. With --runs auto a cell ends once every ratio's 95% interval is within ±3%, or when its
share of --max-seconds is spent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tholos_mlx import machine
from tholos_mlx.bench import prompts
from tholos_mlx.bench.client import StreamStats, stream_chat
from tholos_mlx.bench.peer import Peer, PeerSpec, chat_payload
from tholos_mlx.bench.report import num
from tholos_mlx.bench.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import (
    MIN_RUNS_FOR_CI,
    Direction,
    precise,
    ratio_ci,
    summary,
    verdict,
)
from tholos_mlx.errors import UsageError
from tholos_mlx.tiers import ModelEntry

if TYPE_CHECKING:
    from tholos_mlx.bench.raw import RawModel

AUTO_MIN_RUNS = 5  # below this a bootstrap interval is too optimistic to stop on
AUTO_MAX_RUNS = 200
DECODE_TARGET = 0.98  # server/raw decode tok/s, at least (issue 6)
TTFT_TARGET = 1.05  # server/raw time to first token, at most: the server's own cost <= 5%
TIMED = ("ttft_s", "decode_tps")
FRESH_PREFIX = (
    "every run's prompt opens with a fresh nonce line ('Run 3f9a2c71.'), so no prompt cache "
    "(ours is off here; the peer's stays on) holds more than the chat template's first tokens"
)


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
        "synthetic": config.get("synthetic"),
    }


def figures(run: StreamStats, gen_tokens: int) -> dict[str, Any]:
    """Client-side figures of one streamed request (ours or a peer's)."""
    usage = run.usage or {}
    counted = "completion_tokens" in usage
    # A peer that sends no usage: one content chunk a token, as they stream.
    tokens = int(usage["completion_tokens"]) if counted else run.frames  # type: ignore[call-overload]
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
        "tokens_from": "usage" if counted else "chunks",
    }


@dataclass
class Cell:
    """One prompt size: every measured run of every side, and how measuring it ended."""

    size: int
    runs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"raw": [], "server": [], "peer": []}
    )
    template_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    seconds: float = 0.0
    stopped_by: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, dict[str, Any]]:
        """server/raw and server/peer, TTFT and decode, with intervals (where both sides ran)."""
        out: dict[str, dict[str, Any]] = {}
        for other in ("raw", "peer"):
            if self.runs["server"] and self.runs[other]:
                for name in TIMED:
                    out[f"{other}.{name}"] = ratio_ci(
                        [r[name] for r in self.runs["server"]], [r[name] for r in self.runs[other]]
                    )
        return out

    def precise(self, sides: list[str]) -> bool:
        """Whether every ratio is known within ±3%; a side measured alone, as if paired with itself."""
        cis = list(self.ratios().values())
        if not cis:
            mine = self.runs[sides[0]]
            cis = [ratio_ci([r[n] for r in mine], [r[n] for r in mine]) for n in TIMED]
        return all(precise(ci) for ci in cis)


class Sides:
    """What one run of each side does; built once the models are loaded."""

    def __init__(
        self, raw: RawModel, server: ServerProcess, peer: Peer | None, entry: ModelEntry, gen: int
    ) -> None:
        self.raw, self.server, self.peer, self.entry, self.gen = raw, server, peer, entry, gen

    def run(self, side: str, messages: list[dict[str, str]], ids: list[int]) -> dict[str, Any]:
        """One run of `side` on this prompt; its figures."""
        if side == "raw":
            r = self.raw.run(ids, self.gen)
            return {
                "ttft_s": r.ttft_s,
                "prefill_tps": r.prefill_tps,
                "decode_tps": r.decode_tps,
                "peak_memory_bytes": r.peak_memory_bytes,
                "tokens": r.tokens,
            }
        if side == "server":
            payload = chat_payload(self.entry.id, messages, self.gen)
            fig = figures(stream_chat(self.server.endpoint, payload), self.gen)
            # Logged before the answer's last frame; every request to this server comes here.
            logged = self.server.new_timings()
            fig["inside"] = logged[0] if len(logged) == 1 else None
            return fig
        assert self.peer is not None
        return figures(self.peer.chat(messages, self.gen), self.gen)


def compare(
    args: argparse.Namespace, home: Path, entry: ModelEntry, logs: Path, peer: PeerSpec | None
) -> dict[str, Any]:
    """Raw mlx-lm, the server (prompt cache off) and a peer on the same prompts, interleaved."""
    from tholos_mlx.bench.raw import RawModel  # MLX loads here

    gen = args.gen_tokens
    info = model_info(entry)
    if info["context"] and max(args.prompt_tokens) + gen > info["context"]:
        raise UsageError(
            f"prompt + generated tokens exceed the model's context of {info['context']} tokens"
        )
    say(f"compare: loading {entry.id} for raw mlx-lm")
    raw = RawModel(entry.path)
    tokenizer = raw.tokenizer
    # Alternating runs share a busy machine's ups and downs; that needs every copy in memory.
    copies = 2 + (peer is not None and peer.kind == "mlx_lm")
    interleave = 2 * copies * info["weights_bytes"] < machine.total_memory_bytes()
    side_list = ["raw", "server"] + (["peer"] if peer else [])
    passes = [side_list] if interleave else [["raw"], side_list[1:]]
    cells = {n: Cell(n) for n in args.prompt_tokens}
    server = tholos_server(home, entry, args.port, True, logs / "server.log")
    peer_side = Peer(peer, entry.path, logs / "peer.log") if peer else None
    sides = Sides(raw, server, peer_side, entry, gen)
    slots = len(passes) * len(cells)
    budget_end = time.monotonic() + args.max_seconds
    rss: dict[str, float | None] = {"server": None, "peer": None, "server_mlx_peak": None}
    say(
        f"compare: {' + '.join(side_list)}, "
        f"{'interleaved' if interleave else 'raw first, then the servers'}; "
        f"runs: {args.runs or f'auto (±3%, at most {args.max_seconds:g} s)'}"
    )
    for index, sides_now in enumerate(passes):
        with ExitStack() as stack:
            if "server" in sides_now:
                stack.enter_context(server)
                if peer_side is not None:
                    stack.enter_context(peer_side)
            for cell in cells.values():  # each cell's share of what is left of --max-seconds
                share = max(0.0, budget_end - time.monotonic()) / slots
                _measure(cell, sides_now, sides, args, tokenizer, share)
                slots -= 1
            if "server" in sides_now:
                rss["server"] = server.rss_bytes()
                rss["peer"] = peer_side.rss_bytes() if peer_side else None
        if "server" in sides_now:
            rss["server_mlx_peak"] = server.mlx_peak_mib()  # logged as the server stopped
        if "raw" in sides_now and index == 0 and not interleave:
            raw.close()
    if interleave:
        raw.close()
    cases = [_case(cell) for cell in cells.values()]
    return {
        "gen_tokens": gen,
        "runs": args.runs or "auto",
        "warmup": args.warmup,
        "max_seconds": None if args.runs else args.max_seconds,
        "order": "interleaved" if interleave else "raw first, then the servers interleaved",
        "server_prompt_cache_mb": 0,
        "raw_eos": "masked (logits processor)",
        "fresh_prefix": FRESH_PREFIX,
        "peer": peer_side.info() if peer_side else None,
        "cases": cases,
        "summary": _summary(cases, rss),
    }


def _measure(
    cell: Cell,
    sides_now: list[str],
    sides: Sides,
    args: argparse.Namespace,
    tokenizer: Any,
    seconds: float,
) -> None:
    """Warm-up rounds, then measured rounds of `sides_now` on cell.size-token prompts."""
    started = time.monotonic()
    deadline = started + seconds
    total = f"/{args.runs}" if args.runs else ""
    for i in range(-args.warmup, args.runs or AUTO_MAX_RUNS):
        messages, ids = prompts.counting_prompt(tokenizer, cell.size, prompts.nonce())
        if i >= 0 and "server" in sides_now:
            t0 = time.perf_counter()
            prompts.chat_ids(tokenizer, messages)  # what the server does before its prefill
            cell.template_s.append(time.perf_counter() - t0)
        cell.prompt_tokens = len(ids)
        for side in _rotated(sides_now, i):
            fig = sides.run(side, messages, ids)
            label = "warm-up" if i < 0 else f"{i + 1}{total}"
            say(
                f"  prompt {cell.size}: {side:6} {label}: TTFT {num(fig['ttft_s'], 3)} s, "
                f"decode {num(fig['decode_tps'])} tok/s"
            )
            if i >= 0:
                cell.runs[side].append(fig)
        done = i + 1
        stop = _stop(cell, sides_now, args.runs, done, deadline)
        if stop:
            cell.stopped_by.append(stop)
            break
    else:
        cell.stopped_by.append("runs" if args.runs else "run cap")
    cell.seconds += time.monotonic() - started


def _stop(cell: Cell, sides_now: list[str], runs: int | None, done: int, deadline: float) -> str:
    """Why measuring this cell ends now, or '' to go on."""
    if done < 1 or runs is not None:  # --runs N: the loop's own end
        return ""
    if done >= AUTO_MIN_RUNS and cell.precise(sides_now):
        return "interval"
    return "time cap" if time.monotonic() >= deadline else ""


def _rotated(sides: list[str], i: int) -> list[str]:
    k = i % len(sides)
    return sides[k:] + sides[:k]


def _case(cell: Cell) -> dict[str, Any]:
    raw, srv, peer = cell.runs["raw"], cell.runs["server"], cell.runs["peer"]
    ratios = cell.ratios()
    template = summary(cell.template_s)
    r: dict[str, Any] = {
        name: summary([x[name] for x in raw])
        for name in ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes")
    }
    r["generated_tokens"] = [x["tokens"] for x in raw]
    s = _served(srv)
    s["template_tokenize_s"] = template
    s["inside"] = _inside(srv, raw)
    added = (
        s["ttft_s"]["median"] - r["ttft_s"]["median"]
        if s["ttft_s"]["median"] is not None and r["ttft_s"]["median"] is not None
        else None
    )
    return {
        "prompt_tokens": cell.size,
        "prompt_tokens_actual": cell.prompt_tokens,
        "runs": len(srv) or len(raw),
        "seconds": cell.seconds,
        "stopped_by": cell.stopped_by,
        "raw": r,
        "server": s,
        "peer": _served(peer) if peer else None,
        "ratio": {"ttft": ratios.get("raw.ttft_s"), "decode_tps": ratios.get("raw.decode_tps")},
        "peer_ratio": (
            {"ttft": ratios["peer.ttft_s"], "decode_tps": ratios["peer.decode_tps"]}
            if peer
            else None
        ),
        "server_cost": {
            "ttft_added_ms": None if added is None else added * 1e3,
            "template_tokenize_ms": (
                None if template["median"] is None else template["median"] * 1e3
            ),
        },
    }


PHASES = ("http_ms", "queue_ms", "prompt_ms", "setup_ms", "first_token_ms")


def _inside(srv: list[dict[str, Any]], raw: list[dict[str, Any]]) -> dict[str, Any]:
    """The server's own account of each run (its timing line), set against raw mlx-lm's.

    Issue 14 asks where a gap lies: in MLX's work (the engine's prefill + first token against
    raw's TTFT, the engine's decode rate against raw's) or in the server around it (the phases
    before the engine, and `outside_ms`: the client's TTFT minus all the server logged, i.e.
    the network both ways, Sanic reading the request, the SSE write and the loop's wake-up).
    """
    logged = [x["inside"] for x in srv if x.get("inside")]
    phases = {name: summary([t[name] for t in logged]) for name in PHASES}
    outside = []
    for x in srv:
        t = x.get("inside")
        if t and x["ttft_s"] is not None and all(t[n] is not None for n in PHASES):
            outside.append(x["ttft_s"] * 1e3 - sum(t[n] for n in PHASES))
    phases["outside_ms"] = summary(outside)
    first_s = [t["first_token_ms"] / 1e3 for t in logged if t["first_token_ms"] is not None]
    decode = [t["decode_tps"] for t in logged]
    return {
        "runs_logged": len(logged),
        "phases_ms": phases,
        "decode_tps": summary(decode),
        "ratio": {
            "first_token_vs_raw_ttft": ratio_ci(first_s, [x["ttft_s"] for x in raw]),
            "decode_vs_raw": ratio_ci(decode, [x["decode_tps"] for x in raw]),
            "client_decode_vs_inside": ratio_ci([x["decode_tps"] for x in srv], decode),
        },
    }


def _served(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a server's runs (ours or the peer's)."""
    return {
        "ttft_s": summary([x["ttft_s"] for x in runs]),
        "decode_tps": summary([x["decode_tps"] for x in runs]),
        "completion_tokens": [x["completion_tokens"] for x in runs],
        "prompt_tokens": [x["prompt_tokens"] for x in runs],
        "cached_tokens": [x["cached_tokens"] for x in runs],
        "stopped_early": sum(1 for x in runs if x["stopped_early"]),
        "tokens_from": sorted({x["tokens_from"] for x in runs}),
    }


TARGETS: tuple[tuple[str, str, str, float, Direction], ...] = (
    ("decode tok/s, server/raw", "ratio", "decode_tps", DECODE_TARGET, "at_least"),
    ("time to first token, server/raw", "ratio", "ttft", TTFT_TARGET, "at_most"),
    ("decode tok/s, tholos/peer", "peer_ratio", "decode_tps", 1.0, "at_least"),
    ("time to first token, tholos/peer", "peer_ratio", "ttft", 1.0, "at_most"),
)


def _summary(cases: list[dict[str, Any]], rss: dict[str, float | None]) -> dict[str, Any]:
    def median_of(group: str, name: str) -> float | None:
        values = [c[group][name]["value"] for c in cases if c[group] and c[group][name]]
        median: float | None = summary(values)["median"]
        return median

    targets = []
    for label, group, name, target, direction in TARGETS:
        for c in cases:
            ci = c[group][name] if c[group] else None
            if ci is None:
                continue
            targets.append(
                {
                    "figure": label,
                    "prompt_tokens": c["prompt_tokens"],
                    "target": target,
                    "direction": direction,
                    "value": ci["value"],
                    "ci_low": ci["ci_low"],
                    "ci_high": ci["ci_high"],
                    "verdict": verdict(ci, target, direction),
                }
            )
    return {
        "decode_ratio": median_of("ratio", "decode_tps"),
        "ttft_ratio": median_of("ratio", "ttft"),
        "peer_decode_ratio": median_of("peer_ratio", "decode_tps"),
        "peer_ttft_ratio": median_of("peer_ratio", "ttft"),
        "server_rss_mib": rss["server"] / 2**20 if rss["server"] else None,
        "server_mlx_peak_mib": rss["server_mlx_peak"],  # where Metal memory shows; RSS misses it
        "peer_rss_mib": rss["peer"] / 2**20 if rss["peer"] else None,
        "min_runs_for_interval": MIN_RUNS_FOR_CI,
        "targets": targets,
    }
