"""The structured-output case: one schema with fixed keys, constrained beside unconstrained-but-prompted.

Both sides ask the server the same question for the same object, interleaved, streamed and
greedy; one sends the schema as `response_format` (the grammar writes the fixed keys and
braces as fast-forward tokens, fed to the model in one batch), the other only asks for it in
words. Reported: seconds to the complete answer, decode time per token, and how many answers
parse and validate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import fmt, say
from tholos_mlx.bench.results import (
    STRUCTURED_COMPLETE_BELOW,
    STRUCTURED_DECODE_AT_LEAST,
    Structured,
    StructuredSide,
)
from tholos_mlx.bench.sides.client import StreamStats, chat_payload, figures, stream_chat
from tholos_mlx.bench.sides.server import tholos_server
from tholos_mlx.bench.stats import ratio_ci, summary
from tholos_mlx.tiers import ModelEntry

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "country", "population_millions", "is_capital"],
    "additionalProperties": False,
}
QUESTION = (
    "Describe Paris as one JSON object with exactly the keys city, country, "
    "population_millions (an integer) and is_capital (true or false), and nothing else."
)
MAX_TOKENS = 64
SIDES = ("constrained", "prompted")


def structured_output(plan: Plan, home: Path, entry: ModelEntry, logs: Path) -> Structured:
    """Time a schema answer with the grammar and without it, on the same server, interleaved."""
    runs = plan.runs or 5  # --runs auto: a handful says enough for a ratio of this size
    say(f"structured output: {len(SCHEMA['required'])} fixed keys, {runs} runs a side")
    messages = [{"role": "user", "content": QUESTION}]
    seen: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with tholos_server(home, entry, plan.port, False, logs / "server-structured.log") as server:
        for _ in range(max(plan.warmup, 1)):  # the grammar compiles once; kernels warm up
            for side in SIDES:
                stream_chat(server.endpoint, payload(entry.id, messages, side))
        for i in range(runs):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                run = stream_chat(server.endpoint, payload(entry.id, messages, side))
                seen[side].append(measure(run))
    c, p = seen["constrained"], seen["prompted"]
    out: Structured = {
        "max_tokens": MAX_TOKENS,
        "keys": len(SCHEMA["required"]),
        "constrained": _side(c),
        "prompted": _side(p),
        "complete_ratio": ratio_ci([r["complete_s"] for r in c], [r["complete_s"] for r in p]),
        # Decode speed constrained / prompted: >= 0.95 is the target at GPU speed.
        "decode_ratio": ratio_ci(
            [_speed(r["per_token_s"]) for r in c], [_speed(r["per_token_s"]) for r in p]
        ),
        "targets": {
            "complete_ratio_below": STRUCTURED_COMPLETE_BELOW,
            "decode_ratio_at_least": STRUCTURED_DECODE_AT_LEAST,
        },
    }
    say(
        f"  complete answer: constrained {fmt(out['constrained']['complete_s']['median'], 3)} s, "
        f"prompted {fmt(out['prompted']['complete_s']['median'], 3)} s; valid "
        f"{out['constrained']['valid']}/{runs} and {out['prompted']['valid']}/{runs}"
    )
    return out


def _side(rows: list[dict[str, Any]]) -> StructuredSide:
    return {
        "complete_s": summary([r["complete_s"] for r in rows]),
        "per_token_s": summary([r["per_token_s"] for r in rows]),
        "completion_tokens": [r["completion_tokens"] for r in rows],
        "valid": sum(1 for r in rows if r["valid"]),
        "runs": len(rows),
    }


def payload(model: str, messages: list[dict[str, str]], side: str) -> dict[str, object]:
    """The request of one side: the same question, with or without the schema."""
    body = chat_payload(model, messages, MAX_TOKENS)
    if side == "constrained":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": SCHEMA, "strict": True},
        }
    return body


def measure(run: StreamStats) -> dict[str, Any]:
    """Seconds to the whole answer, seconds per decoded token, and whether it is valid JSON."""
    fig = figures(run, MAX_TOKENS)
    tokens = fig["completion_tokens"]
    first = run.first_content_at
    decode = (run.ended_at - first) / (tokens - 1) if first is not None and tokens > 1 else None
    return {
        "complete_s": run.ended_at - run.sent_at,
        "per_token_s": decode,
        "completion_tokens": tokens,
        "valid": valid(run.text),
    }


def valid(text: str) -> bool:
    """Whether the answer parses and has the schema's keys and types (no jsonschema needed here)."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if not isinstance(value, dict) or set(value) != set(SCHEMA["required"]):
        return False
    return (
        isinstance(value["city"], str)
        and isinstance(value["country"], str)
        and type(value["population_millions"]) is int
        and isinstance(value["is_capital"], bool)
    )


def _speed(per_token_s: float | None) -> float | None:
    return 1.0 / per_token_s if per_token_s else None
