"""The decode case (`--compare`): raw mlx-lm, our server and a peer on the same prompts, run by run.

Each prompt size is a cell: its own warm-up rounds first (so kernel compilation for that shape
never lands in a figure), then measured rounds, each side once a round in a rotating order. A
round's prompt opens with a fresh nonce line, so no prompt cache serves an earlier round's
prefix. With --runs auto a cell ends once every ratio's 95% interval is within ±3%, or when its
share of --max-seconds is spent.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tholos_mlx import machine
from tholos_mlx.bench import prompts
from tholos_mlx.bench.environment import model_info
from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import fmt, say
from tholos_mlx.bench.results import (
    DECODE_TARGET,
    TTFT_TARGET,
    Compare,
    CompareCase,
    CompareSummary,
    Direction,
    Inside,
    Judged,
    Ratio,
    RawSummary,
    Served,
)
from tholos_mlx.bench.sides.client import chat_payload, figures, stream_chat
from tholos_mlx.bench.sides.peer import Peer
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import MIN_RUNS_FOR_CI, precise, ratio_ci, summary, verdict
from tholos_mlx.errors import UsageError
from tholos_mlx.tiers import ModelEntry

if TYPE_CHECKING:
    from tholos_mlx.bench.sides.raw import RawModel

AUTO_MIN_RUNS = 5  # below this a bootstrap interval is too optimistic to stop on
AUTO_MAX_RUNS = 200
TIMED = ("ttft_s", "decode_tps")
FRESH_PREFIX = (
    "every run's prompt opens with a fresh nonce line ('Run 3f9a2c71.'), so no prompt cache "
    "(ours is off here; the peer's stays on) holds more than the chat template's first tokens"
)


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

    def ratios(self) -> dict[str, Ratio]:
        """server/raw and server/peer, TTFT and decode, with intervals (where both sides ran)."""
        out: dict[str, Ratio] = {}
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
            fig: dict[str, Any] = {**figures(stream_chat(self.server.endpoint, payload), self.gen)}
            # Logged before the answer's last frame; every request to this server comes here.
            logged = self.server.new_timings()
            fig["inside"] = logged[0] if len(logged) == 1 else None
            return fig
        assert self.peer is not None
        return {**figures(self.peer.chat(messages, self.gen), self.gen)}


def compare(plan: Plan, home: Path, entry: ModelEntry, logs: Path) -> Compare:
    """Raw mlx-lm, the server (prompt cache off) and a peer on the same prompts, interleaved."""
    from tholos_mlx.bench.sides.raw import RawModel  # MLX loads here

    peer = plan.peer
    gen = plan.gen_tokens
    info = model_info(entry)
    if info["context"] and max(plan.prompt_tokens) + gen > info["context"]:
        raise UsageError(
            f"prompt + generated tokens exceed the model's context of {info['context']} tokens"
        )
    say(f"compare: loading {entry.id} for raw mlx-lm")
    raw = RawModel(entry.path)
    tokenizer = raw.tokenizer
    # Alternating runs share a busy machine's ups and downs; that needs every copy in memory.
    copies = 2 + (peer is not None and peer.kind in ("mlx_lm", "ranks"))
    interleave = 2 * copies * info["weights_bytes"] < machine.total_memory_bytes()
    side_list = ["raw", "server"] + (["peer"] if peer else [])
    passes = [side_list] if interleave else [["raw"], side_list[1:]]
    cells = {n: Cell(n) for n in plan.prompt_tokens}
    server = tholos_server(home, entry, plan.port, True, logs / "server.log")
    peer_side = Peer(peer, home, entry, logs / "peer.log") if peer else None
    sides = Sides(raw, server, peer_side, entry, gen)
    slots = len(passes) * len(cells)
    budget_end = time.monotonic() + plan.max_seconds
    rss: dict[str, float | None] = {"server": None, "peer": None, "server_mlx_peak": None}
    say(
        f"compare: {' + '.join(side_list)}, "
        f"{'interleaved' if interleave else 'raw first, then the servers'}; "
        f"runs: {plan.runs or f'auto (±3%, at most {plan.max_seconds:g} s)'}"
    )
    for index, sides_now in enumerate(passes):
        with ExitStack() as stack:
            if "server" in sides_now:
                stack.enter_context(server)
                if peer_side is not None:
                    stack.enter_context(peer_side)
            for cell in cells.values():  # each cell's share of what is left of --max-seconds
                share = max(0.0, budget_end - time.monotonic()) / slots
                _measure(cell, sides_now, sides, plan, tokenizer, share)
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
        "runs": plan.runs or "auto",
        "warmup": plan.warmup,
        "max_seconds": None if plan.runs else plan.max_seconds,
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
    plan: Plan,
    tokenizer: Any,
    seconds: float,
) -> None:
    """Warm-up rounds, then measured rounds of `sides_now` on cell.size-token prompts."""
    started = time.monotonic()
    deadline = started + seconds
    total = f"/{plan.runs}" if plan.runs else ""
    for i in range(-plan.warmup, plan.runs or AUTO_MAX_RUNS):
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
                f"  prompt {cell.size}: {side:6} {label}: TTFT {fmt(fig['ttft_s'], 3)} s, "
                f"decode {fmt(fig['decode_tps'])} tok/s"
            )
            if i >= 0:
                cell.runs[side].append(fig)
        done = i + 1
        stop = _stop(cell, sides_now, plan.runs, done, deadline)
        if stop:
            cell.stopped_by.append(stop)
            break
    else:
        cell.stopped_by.append("runs" if plan.runs else "run cap")
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


def _case(cell: Cell) -> CompareCase:
    raw, srv, peer = cell.runs["raw"], cell.runs["server"], cell.runs["peer"]
    ratios = cell.ratios()
    template = summary(cell.template_s)
    r: RawSummary = {
        "ttft_s": summary([x["ttft_s"] for x in raw]),
        "prefill_tps": summary([x["prefill_tps"] for x in raw]),
        "decode_tps": summary([x["decode_tps"] for x in raw]),
        "peak_memory_bytes": summary([x["peak_memory_bytes"] for x in raw]),
        "generated_tokens": [x["tokens"] for x in raw],
    }
    s = _served(srv)
    s["template_tokenize_s"] = template
    s["inside"] = _inside(srv, raw)
    srv_ttft, raw_ttft = s["ttft_s"]["median"], r["ttft_s"]["median"]
    added = srv_ttft - raw_ttft if srv_ttft is not None and raw_ttft is not None else None
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


def _inside(srv: list[dict[str, Any]], raw: list[dict[str, Any]]) -> Inside:
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


def _served(runs: list[dict[str, Any]]) -> Served:
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


Group = Literal["ratio", "peer_ratio"]
Figure = Literal["ttft", "decode_tps"]
TARGETS: tuple[tuple[str, Group, Figure, float, Direction], ...] = (
    ("decode tok/s, server/raw", "ratio", "decode_tps", DECODE_TARGET, "at_least"),
    ("time to first token, server/raw", "ratio", "ttft", TTFT_TARGET, "at_most"),
    ("decode tok/s, tholos/peer", "peer_ratio", "decode_tps", 1.0, "at_least"),
    ("time to first token, tholos/peer", "peer_ratio", "ttft", 1.0, "at_most"),
)


def _ratio(case: CompareCase, group: Group, name: Figure) -> Ratio | None:
    pair = case["ratio"] if group == "ratio" else case["peer_ratio"]
    if pair is None:
        return None
    return pair["ttft"] if name == "ttft" else pair["decode_tps"]


def _summary(cases: list[CompareCase], rss: dict[str, float | None]) -> CompareSummary:
    def median_of(group: Group, name: Figure) -> float | None:
        cis = [_ratio(c, group, name) for c in cases]
        return summary([ci["value"] for ci in cis if ci])["median"]

    targets: list[Judged] = []
    for label, group, name, target, direction in TARGETS:
        for c in cases:
            ci = _ratio(c, group, name)
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
    server, peer = rss["server"], rss["peer"]
    return {
        "decode_ratio": median_of("ratio", "decode_tps"),
        "ttft_ratio": median_of("ratio", "ttft"),
        "peer_decode_ratio": median_of("peer_ratio", "decode_tps"),
        "peer_ttft_ratio": median_of("peer_ratio", "ttft"),
        "server_rss_mib": server / 2**20 if server else None,
        "server_mlx_peak_mib": rss["server_mlx_peak"],  # where Metal memory shows; RSS misses it
        "peer_rss_mib": peer / 2**20 if peer else None,
        "min_runs_for_interval": MIN_RUNS_FOR_CI,
        "targets": targets,
    }
