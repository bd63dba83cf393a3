"""Request parse cost of each dialect (bytes -> internal request), this tree beside another.

    .venv/bin/python scripts/parse_cost.py                      # this tree alone
    .venv/bin/python scripts/parse_cost.py --against /tmp/old   # e.g. `git archive REV tholos_mlx`

`--against` may be given more than once; a case a tree refuses (a body it predates) is shown "-".
The trees before each dialect was declared with pydantic (issue 18): chat 4cec6fe, Anthropic
afec443, Responses 7046c98 (`git archive REV tholos_mlx | tar -x -C /tmp/REV`).

Each run is one fresh process per tree, taken in turns (interleaved), so load on a shared machine
falls on both; a case's number is the best over runs of the mean CPU time of a timed loop (CPU time, not wall
clock: other processes on a shared machine take turns on the cores, which wall time would count).
Not in the wheel: a measuring aid for the validation work (issue 18).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CODEX = ROOT / "tests" / "fixtures" / "agents" / "codex-turn1.json"
CLAUDE = ROOT / "tests" / "fixtures" / "agents" / "claude-code-turn2.json"
_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def cases() -> dict[str, tuple[str, bytes]]:
    """Each case: its dialect and its body."""
    codex = json.loads(CODEX.read_text())["body"]
    claude = json.loads(CLAUDE.read_text())["body"]
    return {
        "responses: Hello": ("responses", _dumps({"model": "fast", "input": "Hello"})),
        "responses: instructions, a call and its output, a tool": (
            "responses",
            _dumps(
                {
                    "model": "fast",
                    "instructions": "Answer briefly.",
                    "input": [
                        {"role": "user", "content": "Weather in Paris?"},
                        {
                            "type": "function_call",
                            "call_id": "call_1",
                            "name": "get_weather",
                            "arguments": '{"city": "Paris"}',
                        },
                        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                    ],
                    "tools": [_TOOL],
                }
            ),
        ),
        "responses: Codex's recorded first turn": ("responses", _dumps(codex)),
        "anthropic: system, a tool_use and tool_result round, a tool": (
            "anthropic",
            _dumps(
                {
                    "model": "fast",
                    "max_tokens": 256,
                    "system": "Answer briefly.",
                    "messages": [
                        {"role": "user", "content": "Weather in Paris?"},
                        {
                            "role": "assistant",
                            "content": [
                                {"type": "text", "text": "Let me look."},
                                {
                                    "type": "tool_use",
                                    "id": "toolu_1",
                                    "name": "get_weather",
                                    "input": {"city": "Paris"},
                                },
                            ],
                        },
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "tool_result",
                                    "tool_use_id": "toolu_1",
                                    "content": "sunny",
                                }
                            ],
                        },
                    ],
                    "tools": [
                        {
                            "name": "get_weather",
                            "description": "The weather in a city.",
                            "input_schema": _TOOL["parameters"],
                        }
                    ],
                }
            ),
        ),
        "anthropic: Claude Code's recorded second turn": ("anthropic", _dumps(claude)),
        "chat: Hello": ("chat", _dumps({"messages": [{"role": "user", "content": "Hello"}]})),
    }


def _parsers() -> dict[str, Callable[[bytes], Any]]:
    """Each dialect's parse function, wherever the measured tree keeps it."""
    from tholos_mlx.api.anthropic_request import parse_messages
    from tholos_mlx.api.responses_request import parse_responses

    try:
        from tholos_mlx.api.openai_chat_request import parse_chat
    except ImportError:  # before the chat request had its own module
        from tholos_mlx.api.openai_chat import parse_chat  # type: ignore[attr-defined,no-redef]
    return {"responses": parse_responses, "anthropic": parse_messages, "chat": parse_chat}


def _time(parse: Callable[[bytes], Any], body: bytes, seconds: float = 0.2) -> float:
    """Microseconds per call: the best of five loops, each long enough to time well."""
    loops = 1
    while True:
        start = time.process_time()
        for _ in range(loops):
            parse(body)
        took = time.process_time() - start
        if took > seconds / 5:
            break
        loops *= 2
    best = took / loops
    for _ in range(4):
        start = time.process_time()
        for _ in range(loops):
            parse(body)
        best = min(best, (time.process_time() - start) / loops)
    return best * 1e6


def measure_here() -> dict[str, float]:
    """Every case in this process, against whichever tholos_mlx it imports."""
    parsers = _parsers()
    out = {}
    for name, (dialect, body) in cases().items():
        try:
            parsers[dialect](body)
        except Exception:  # noqa: BLE001 - a tree that predates this body: not measured
            continue
        out[name] = _time(parsers[dialect], body)
    return out


def _run(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--one"], env=env, check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--against", type=Path, action="append", default=[], help="another tree with tholos_mlx/"
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import tholos_mlx

        assert (
            Path(tholos_mlx.__file__)
            .resolve()
            .is_relative_to(Path(os.environ.get("PYTHONPATH", ROOT)).resolve())
        ), tholos_mlx.__file__
        print(json.dumps(measure_here()))
        return
    trees = [*args.against, ROOT]
    best: list[dict[str, float]] = [{} for _ in trees]
    for _ in range(args.runs):
        for i, path in enumerate(trees):
            for name, us in _run(path).items():
                best[i][name] = min(us, best[i].get(name, us))
    for i, path in enumerate(trees):
        print(f"[{i}] {path}")
    print(
        f"{'case (microseconds)':62} {'bytes':>7}"
        + "".join(f" {f'[{i}]':>8}" for i in range(len(trees)))
    )
    for name, (_, body) in cases().items():
        cols = "".join(f" {b[name]:8.1f}" if name in b else f" {'-':>8}" for b in best)
        print(f"{name:62} {len(body):7}{cols}")


if __name__ == "__main__":
    main()
