"""`--agent-turn`: the first token of an agent's second turn when its system prompt's head changed.

Claude Code opens its system prompt with a line that changes on every request
(`x-anthropic-billing-header: ... cch=...;`). A prefix cache keyed on the prompt's first tokens
then misses the whole prompt every turn, unless the server recognises the line. Each
measurement is a fresh conversation (its own question, its own header value) sent as Claude Code
sends it, to /v1/messages with the prompt cache on: a first turn, then the second turn either
with a new header value (changed) or with the same one (unchanged, the baseline). Changed over
unchanged time to first token near 1 means the volatile line costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from tholos_mlx.bench import prompts, workloads
from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import fmt, say
from tholos_mlx.bench.results import AgentTurn
from tholos_mlx.bench.sides.client import StreamFigures, figures, messages_payload, stream_messages
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio_ci, summary
from tholos_mlx.tiers import ModelEntry

SIDES = ("changed", "unchanged")
FIRST_ANSWER_TOKENS = 8
GEN = 4  # only the time to the first token matters


def agent_turn(plan: Plan, home: Path, entry: ModelEntry, logs: Path) -> AgentTurn:
    """Second turns with the volatile first line changed, beside the same line unchanged."""
    from tholos_mlx.bench.sides.raw import load_tokenizer

    system = prompts.shared_system(load_tokenizer(entry.path), plan.prefix_tokens)
    runs = plan.runs or 5
    say(f"agent turn: a {plan.prefix_tokens}-token system prompt, {runs} second turns a side")
    seen: dict[str, list[StreamFigures]] = {side: [] for side in SIDES}
    log = logs / "server-agent-turn.log"
    with tholos_server(home, entry, plan.port, False, log) as server:
        for i in range(plan.warmup + runs):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                fig = _conversation(server, entry, system, side)
                say(
                    f"  {side:9} {'warm-up' if i < plan.warmup else i - plan.warmup + 1}: "
                    f"TTFT {fmt(fig['ttft_s'], 3)} s, {fig['cached_tokens']} of "
                    f"{fig['prompt_tokens']} prompt tokens cached"
                )
                if i >= plan.warmup:
                    seen[side].append(fig)
    changed, unchanged = seen["changed"], seen["unchanged"]
    return {
        "prefix_tokens": plan.prefix_tokens,
        "volatile_line": "x-anthropic-billing-header: ... cch=...; (Claude Code)",
        "baseline": "the same second turn with the header line unchanged",
        "changed": summary([f["ttft_s"] for f in changed]),
        "unchanged": summary([f["ttft_s"] for f in unchanged]),
        "changed_cached_tokens": [f["cached_tokens"] for f in changed],
        "unchanged_cached_tokens": [f["cached_tokens"] for f in unchanged],
        "prompt_tokens": [f["prompt_tokens"] for f in changed + unchanged],
        "ratio": ratio_ci([f["ttft_s"] for f in changed], [f["ttft_s"] for f in unchanged]),
    }


def _conversation(
    server: ServerProcess, entry: ModelEntry, system: str, side: str
) -> StreamFigures:
    """A new conversation's first turn, then its second turn; the second's figures."""
    header = workloads.billing_header()
    question = f"{prompts.nonce()} {prompts.QUESTIONS[0]}"
    first = workloads.agent_turn(header, system, question)
    answer = stream_messages(
        server.endpoint, messages_payload(entry.id, *first, FIRST_ANSWER_TOKENS)
    ).text
    again = workloads.billing_header() if side == "changed" else header
    second = workloads.agent_turn(again, system, question, answer or "Yes.")
    run = stream_messages(server.endpoint, messages_payload(entry.id, *second, GEN))
    fig = figures(run, GEN)
    if fig["ttft_s"] is None:  # an empty answer: the stream's end is the nearest
        fig["ttft_s"] = run.ended_at - run.sent_at
    return fig
