"""`--workload edit|prose`: the server with speculative decoding on beside off, in the same run.

Two servers on the same model, one `--speculative ngram`, one `--speculative off`, get the same
prompts in alternating order, streamed and greedy. The figure is the decode rate, so the prompt
cache stays on and a warm-up round fills it: each measured run then pays no prefill, which on a
CPU is most of a run's time. Reported per kind of prompt and over all: the decode tok/s ratio
on/off with its interval, the share of drafted tokens the model accepted, and the tokens each
verify step produced, read from the `drafted=` and `accepted=` of the server's timing lines.
Greedy answers must be byte-identical on and off; the result counts the runs where they were.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from tholos_mlx import machine
from tholos_mlx.bench import workloads
from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import fmt, say
from tholos_mlx.bench.results import (
    SPECULATION_TARGETS,
    Judged,
    Speculation,
    SpeculationKind,
    SpeculationSide,
)
from tholos_mlx.bench.sides.client import StreamFigures, chat_payload, figures, stream_chat
from tholos_mlx.bench.sides.server import ServerProcess, tholos_server
from tholos_mlx.bench.stats import ratio_ci, summary, verdict
from tholos_mlx.tiers import ModelEntry

SIDES = ("on", "off")
MODE = "ngram"  # drafting from the prompt and the answer: nothing else to install


class Run:
    """One request of one side: the client's figures, the server's drafts, the answer."""

    def __init__(self, fig: StreamFigures, logged: dict[str, float | None] | None, text: str):
        self.fig, self.text = fig, text
        self.engine_decode_tps = logged.get("decode_tps") if logged else None
        drafted = logged.get("drafted") if logged else None
        accepted = logged.get("accepted") if logged else None
        self.drafted = None if drafted is None else int(drafted)
        self.accepted = None if accepted is None else int(accepted)

    @property
    def acceptance(self) -> float | None:
        """The share of drafted tokens the model kept."""
        if self.drafted and self.accepted is not None:
            return self.accepted / self.drafted
        return None

    @property
    def tokens_per_step(self) -> float | None:
        """Answer tokens after the first per decode step: each step keeps its accepted drafts + 1."""
        tokens = self.fig["completion_tokens"] - 1
        if self.accepted is None or tokens < 1:
            return None
        steps = tokens - self.accepted
        return tokens / steps if steps > 0 else None


def server_flags(plan: Plan, side: str) -> tuple[str, ...]:
    """The serve flags of one side: speculation on (with the depth asked for) or off."""
    flags: tuple[str, ...] = (
        "--disk-cache-gb",
        "0",
        "--speculative",
        MODE if side == "on" else "off",
    )
    if side == "on" and plan.num_draft_tokens is not None:
        flags += ("--num-draft-tokens", str(plan.num_draft_tokens))
    return flags


def speculation(plan: Plan, home: Path, entry: ModelEntry, logs: Path, device: str) -> Speculation:
    """Measure the workload's prompts on a server with speculation on and one with it off."""
    assert plan.workload is not None
    kinds = workloads.WORKLOADS[plan.workload]
    runs = plan.runs or 5  # --runs auto: five a kind and side
    warmup = max(plan.warmup, 1)  # fills each server's prompt cache with every prompt
    weights = sum(p.stat().st_size for p in entry.path.glob("*.safetensors"))
    together = 2 * 2 * weights < machine.total_memory_bytes()
    servers = {
        side: tholos_server(
            home, entry, plan.port if side == "on" else None, False,
            logs / f"server-speculation-{side}.log", server_flags(plan, side),
        )
        for side in SIDES
    }  # fmt: skip
    passes = [list(SIDES)] if together else [[side] for side in SIDES]
    say(
        f"workload {plan.workload}: {', '.join(k.name for k in kinds)}; speculation {MODE} beside "
        f"off, {runs} runs a kind and side, {plan.gen_tokens} tokens"
    )
    seen: dict[str, dict[str, list[Run]]] = {k.name: {s: [] for s in SIDES} for k in kinds}
    asked = {k.name: k.build("") for k in kinds}
    for sides_now in passes:
        with ExitStack() as stack:
            for side in sides_now:
                stack.enter_context(servers[side])
            for i in range(warmup + runs):
                for kind in kinds:
                    order = sides_now if i % 2 == 0 else sides_now[::-1]
                    for side in order:
                        run = _one(servers[side], entry, asked[kind.name], plan.gen_tokens)
                        label = "warm-up" if i < warmup else f"{i - warmup + 1}/{runs}"
                        say(
                            f"  {kind.name:8} {side:3} {label}: decode "
                            f"{fmt(run.fig['decode_tps'])} tok/s, drafted {run.drafted}, "
                            f"accepted {run.accepted}"
                        )
                        if i >= warmup:
                            seen[kind.name][side].append(run)
    rows = [_kind(name, by_side) for name, by_side in seen.items()]
    on = [r for k in seen.values() for r in k["on"]]
    overall = ratio_ci(*_normalized(seen))
    target = SPECULATION_TARGETS[plan.workload]["gpu" if device == "gpu" else "cpu"]
    judged: Judged = {
        "figure": f"decode tok/s, speculation {MODE}/off, {plan.workload} workload",
        "prompt_tokens": None,
        "target": target,
        "direction": "at_least",
        "value": overall["value"],
        "ci_low": overall["ci_low"],
        "ci_high": overall["ci_high"],
        "verdict": verdict(overall, target, "at_least"),
    }
    return {
        "workload": plan.workload,
        "mode": MODE,
        "num_draft_tokens": plan.num_draft_tokens,
        "gen_tokens": plan.gen_tokens,
        "runs": runs,
        "warmup": warmup,
        "order": "interleaved" if together else "on first, then off",
        "kinds": rows,
        "decode_ratio": overall,
        "acceptance_rate": summary([r.acceptance for r in on]),
        "tokens_per_step": summary([r.tokens_per_step for r in on]),
        "target": judged,
        "logged_drafts": any(r.drafted is not None for r in on),
    }


def _normalized(seen: dict[str, dict[str, list[Run]]]) -> tuple[list[float], list[float]]:
    """Every run's decode rate over the median of its kind's runs without speculation, on and off.

    Kinds decode at different rates (a quote is cheaper than JSON); pooled as they are, that
    spread would widen the interval of a ratio that is about speculation only.
    """
    on: list[float] = []
    off: list[float] = []
    for by_side in seen.values():
        rates = {s: [r.fig["decode_tps"] for r in by_side[s]] for s in SIDES}
        base = summary(rates["off"])["median"]
        if base:
            on += [v / base for v in rates["on"] if v is not None]
            off += [v / base for v in rates["off"] if v is not None]
    return on, off


def _one(server: ServerProcess, entry: ModelEntry, messages: list[dict[str, str]], gen: int) -> Run:
    stats = stream_chat(server.endpoint, chat_payload(entry.id, messages, gen))
    logged = server.new_timings()  # logged before the answer's last frame
    return Run(figures(stats, gen), logged[0] if len(logged) == 1 else None, stats.text)


def _side(runs: list[Run]) -> SpeculationSide:
    return {
        "ttft_s": summary([r.fig["ttft_s"] for r in runs]),
        "decode_tps": summary([r.fig["decode_tps"] for r in runs]),
        "engine_decode_tps": summary([r.engine_decode_tps for r in runs]),
        "completion_tokens": [r.fig["completion_tokens"] for r in runs],
        "drafted": [r.drafted for r in runs],
        "accepted": [r.accepted for r in runs],
    }


def _kind(name: str, by_side: dict[str, list[Run]]) -> SpeculationKind:
    on, off = by_side["on"], by_side["off"]
    return {
        "kind": name,
        "prompt_tokens": [r.fig["prompt_tokens"] for r in on],
        "on": _side(on),
        "off": _side(off),
        "decode_ratio": ratio_ci(
            [r.fig["decode_tps"] for r in on], [r.fig["decode_tps"] for r in off]
        ),
        "acceptance_rate": summary([r.acceptance for r in on]),
        "tokens_per_step": summary([r.tokens_per_step for r in on]),
        "same_answers": sum(1 for a, b in zip(on, off) if a.text == b.text),
    }
