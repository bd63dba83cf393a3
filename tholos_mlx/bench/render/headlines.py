"""The figures a reader wants first, one per line, printed at the end of a run."""

from __future__ import annotations

from tholos_mlx.bench.render.numbers import fmt, interval
from tholos_mlx.bench.results import Result


def headlines(result: Result) -> str:
    """The figures a reader wants first, one per line."""
    m = result["machine"]
    lines = [f"{m['chip']} ({m['mlx_device']}), {result['date']}"]
    model = result.get("model")
    synthetic = model["synthetic"] if model else None
    if model and synthetic:
        lines.append(f"model: {model['id']}, random weights ({synthetic['shape']} shape)")
    compare = result.get("compare")
    if compare:
        for case in compare["cases"]:
            raw, srv, r = case["raw"], case["server"], case["ratio"]
            line = (
                f"prompt {case['prompt_tokens']:>6}: TTFT raw {fmt(raw['ttft_s']['median'], 3)} s, "
                f"server {fmt(srv['ttft_s']['median'], 3)} s (x{interval(r['ttft'])}); decode raw "
                f"{fmt(raw['decode_tps']['median'])} tok/s, "
                f"server {fmt(srv['decode_tps']['median'])} tok/s (x{interval(r['decode_tps'])})"
            )
            if case["peer_ratio"]:
                p = case["peer_ratio"]
                line += f"; tholos/peer: TTFT x{interval(p['ttft'])}, decode x{interval(p['decode_tps'])}"
            lines.append(line)
        for t in compare["summary"]["targets"]:
            sign = ">=" if t["direction"] == "at_least" else "<="
            lines.append(
                f"{t['figure']} at {t['prompt_tokens']} tokens: {interval(t)} "
                f"(target {sign} {t['target']:g}): {t['verdict']}"
            )
    cached = result.get("cached_prefix")
    if cached:
        lines.append(
            f"cached prefix: cold TTFT {fmt(cached['cold']['ttft_s'], 3)} s, warm "
            f"{fmt(cached['warm_ttft_s']['median'], 3)} s, "
            f"warm/cold {fmt(cached['warm_cold_ratio'], 3)} (target <= 0.10)"
        )
    restarted = result.get("after_restart")
    if restarted:
        lines.append(
            f"prompt cache after a restart: cold TTFT {fmt(restarted['cold']['ttft_s'], 3)} s, "
            f"after restart {fmt(restarted['after_restart']['ttft_s'], 3)} s "
            f"({restarted['after_restart']['cached_tokens']} tokens from disk), "
            f"{fmt(restarted['speedup'], 1)}x sooner (target >= {restarted['target_speedup']:g}x)"
        )
    so = result.get("structured_output")
    if so:
        lines.append(
            f"structured output: complete answer constrained/prompted x{interval(so['complete_ratio'])} "
            f"(target < 1), decode x{interval(so['decode_ratio'])} (target >= 0.95); valid "
            f"{so['constrained']['valid']}/{so['constrained']['runs']} constrained, "
            f"{so['prompted']['valid']}/{so['prompted']['runs']} prompted"
        )
    spec = result.get("speculation")
    if spec:
        t = spec["target"]
        lines.append(
            f"speculation, {spec['workload']} workload: decode on/off x{interval(spec['decode_ratio'])} "
            f"(target >= {t['target']:g}): {t['verdict']}; acceptance "
            f"{fmt(spec['acceptance_rate']['median'])}, tokens per verify step "
            f"{fmt(spec['tokens_per_step']['median'])}"
        )
    turn = result.get("agent_turn")
    if turn:
        lines.append(
            f"agent turn: TTFT after the header line changed {fmt(turn['changed']['median'], 3)} s, "
            f"unchanged {fmt(turn['unchanged']['median'], 3)} s (x{interval(turn['ratio'])})"
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
