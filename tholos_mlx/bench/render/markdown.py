"""A benchmark result as Markdown: medians (min–max) of the runs, ratios with 95% intervals."""

from __future__ import annotations

from tholos_mlx.bench.render.numbers import cell as _cell
from tholos_mlx.bench.render.numbers import fmt, interval
from tholos_mlx.bench.results import (
    NOT_MEASURABLE,
    AgentTurn,
    Compare,
    Result,
    Speculation,
    SpeculationSide,
    Structured,
)


def markdown(result: Result) -> str:
    """The result as Markdown tables."""
    m, sw = result["machine"], result["software"]
    lines = [
        f"# tholos-mlx bench, {result['date']}",
        "",
        (
            f"- Machine: {m['chip']}, {m['memory_gib']} GiB, {m['os']} "
            f"({m['arch']}, {m['cpu_count']} cores), MLX device: {m['mlx_device']}"
            + (" (no GPU: MLX ran on the CPU)" if m["mlx_device"] == "cpu" else "")
        ),
        (
            f"- Software: tholos-mlx {sw['tholos-mlx']} (commit {sw['git_commit'][:12]}"
            f"{', uncommitted changes' if sw['git_dirty'] else ''}), mlx {sw['mlx']}, "
            f"mlx-lm {sw['mlx-lm']}, Python {sw['python']}"
        ),
    ]
    mo = result.get("model")
    if mo:
        lines.append(
            f"- Model: `{mo['id']}` (tier {mo['tier']}, {mo['weights_mib']:.0f} MiB of weights)"
        )
        syn = mo.get("synthetic")
        if syn:
            lines.append(
                f"- **The weights are random**: a {syn['shape']} shape, {mo['quantization_bits']}-bit, "
                f"with the tokenizer of `{syn['tokenizer_from']}`. Its answers are gibberish; its "
                "speed is that of a real model of this shape."
            )
    lines.append("- Each figure: median (min–max) of the runs, after discarded warm-up runs.")
    compare = result.get("compare")
    if compare:
        lines += _compare(compare)
    cached = result.get("cached_prefix")
    if cached:
        lines += [
            "",
            (
                f"## Cached prefix (~{cached['prefix_tokens']}-token prompts: one long system "
                "prompt, a different question each; prompt cache on)"
            ),
            "",
            "| request | TTFT s | cached prompt tokens |",
            "|---|---:|---:|",
            (
                f"| first (cold) | {fmt(cached['cold']['ttft_s'], 3)} "
                f"| {cached['cold']['cached_tokens']} |"
            ),
            (
                f"| later (warm), {len(cached['warm'])} | {_cell(cached['warm_ttft_s'], 3)} "
                f"| {', '.join(str(w['cached_tokens']) for w in cached['warm'])} |"
            ),
            "",
            f"Warm/cold TTFT: **{fmt(cached['warm_cold_ratio'], 3)}** (target ≤ 0.10).",
        ]
    restarted = result.get("after_restart")
    if restarted:
        cold, warm = restarted["cold"], restarted["after_restart"]
        lines += [
            "",
            f"## Prompt cache across a restart (~{restarted['prefix_tokens']}-token prompt)",
            "",
            "| request | TTFT s | cached prompt tokens |",
            "|---|---:|---:|",
            f"| cold | {fmt(cold['ttft_s'], 3)} | {cold['cached_tokens']} |",
            (
                f"| after SIGTERM and a new server | {fmt(warm['ttft_s'], 3)} "
                f"| {warm['cached_tokens']} |"
            ),
            "",
            (
                f"First token **{fmt(restarted['speedup'], 1)}×** sooner after the restart "
                f"(target ≥ {restarted['target_speedup']:g}×)."
            ),
        ]
    so = result.get("structured_output")
    if so:
        lines += _structured(so)
    ceiling = result.get("ceiling")
    if ceiling:
        fl, ls = ceiling["modes"]["flood"], ceiling["modes"]["lockstep"]
        lines += [
            "",
            (
                f"## Server ceiling (zero-cost engine, {ceiling['tokens']:,} tokens per stream, "
                f"{ceiling['runs']} runs)"
            ),
            "",
            (
                "| engine hands tokens | tokens/s | µs/token (wall) | frames/s | tokens/frame "
                "| loop CPU µs/frame | engine CPU µs/token |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, fig in (("as fast as it can (flood)", fl), ("one per frame (lockstep)", ls)):
            lines.append(
                f"| {name} | {_cell(fig['tokens_per_s'], 0)} "
                f"| {_cell(fig['wall_us_per_token'], 1)} "
                f"| {_cell(fig['frames_per_s'], 0)} | {_cell(fig['tokens_per_frame'], 1)} "
                f"| {_cell(fig['loop_cpu_us_per_frame'], 1)} "
                f"| {_cell(fig['engine_cpu_us_per_token'], 1)} |"
            )
        lines += [
            "",
            (
                f"Target: ≥ {ceiling['target_tokens_per_s']:,} tokens/s to one client and < "
                f"{ceiling['target_us_per_token']:g} µs of server work a token. Delivered: "
                f"**{fmt(ceiling['tokens_per_s'], 0)} tokens/s**; per token, at one token per "
                f"frame, the event loop spends **{fmt(ceiling['us_per_token'], 1)} µs** of CPU "
                f"({fmt(ls['tokens_per_s']['median'], 0)} tokens/s wall, thread hand-offs "
                "included). "
                f"Meets target: **{'yes' if ceiling['meets_target'] else 'no'}**."
            ),
        ]
        prof = ceiling.get("profile")
        if prof:
            lines += [
                "",
                (
                    f"Profile of one lockstep stream ({prof['tool']}; "
                    f"{fmt(prof['profiled_us_per_token'], 1)} µs/token while profiled), "
                    "top self time per token:"
                ),
                "",
                "| function | calls/token | self µs/token | total µs/token |",
                "|---|---:|---:|---:|",
            ]
            for row in prof["top_self"][:15]:
                lines.append(
                    f"| `{row['function']}` | {row['calls_per_token']:.2f} "
                    f"| {row['self_us_per_token']:.2f} | {row['total_us_per_token']:.2f} |"
                )
    spec = result.get("speculation")
    if spec:
        lines += _speculation(spec)
    turn = result.get("agent_turn")
    if turn:
        lines += _agent_turn(turn)
    return "\n".join(lines) + "\n"


def _compare(c: Compare) -> list[str]:
    peer = c["peer"]
    name = peer["name"] if peer else None
    runs = (
        f"{c['runs']} runs"
        if c["runs"] != "auto"
        else (f"runs: auto, until every interval is within ±3% or {c['max_seconds']:g} s")
    )
    lines = [
        "",
        (
            f"## Raw mlx-lm, the server{f' and {name}' if name else ''} "
            f"({c['gen_tokens']} generated tokens, {runs}, {c['order']})"
        ),
        "",
        f"- Prompts: {c['fresh_prefix']}.",
        "- Every side decodes greedily and streams; raw mlx-lm masks EOS, the servers may stop "
        "early (counted).",
    ]
    if peer:
        lines.append(
            f"- Peer: {name}, model `{peer['model']}`"
            + (f", mlx-lm {peer['version']} at {peer['url']}" if peer.get("version") else "")
            + "."
        )
    lines += [
        "",
        "| prompt tokens | runs | raw TTFT s | server TTFT s | "
        + ("peer TTFT s | " if peer else "")
        + "raw prefill tok/s | raw decode tok/s | server decode tok/s | "
        + ("peer decode tok/s | " if peer else "")
        + "raw peak MiB | early stops |",
        "|" + "---:|" * (9 + (2 if peer else 0)),
    ]
    for case in c["cases"]:
        raw, srv, pr = case["raw"], case["server"], case["peer"]
        early = str(srv["stopped_early"]) + (f" / {pr['stopped_early']}" if pr else "")
        lines.append(
            f"| {case['prompt_tokens']} | {case['runs']} | {_cell(raw['ttft_s'], 3)} "
            f"| {_cell(srv['ttft_s'], 3)} | "
            + (f"{_cell(pr['ttft_s'], 3)} | " if pr else "")
            + f"{_cell(raw['prefill_tps'], 1)} | {_cell(raw['decode_tps'])} "
            f"| {_cell(srv['decode_tps'])} | "
            + (f"{_cell(pr['decode_tps'])} | " if pr else "")
            + f"{_cell(raw['peak_memory_bytes'], 0, 2**-20)} | {early} |"
        )
    lines += [
        "",
        "### Ratios, with 95% confidence intervals (bootstrap over the runs)",
        "",
        "| prompt tokens | TTFT server/raw | decode server/raw | "
        + ("TTFT tholos/peer | decode tholos/peer | " if peer else "")
        + "measuring stopped by |",
        "|---:|---:|---:|" + ("---:|---:|" if peer else "") + "---|",
    ]
    for case in c["cases"]:
        r, prr = case["ratio"], case["peer_ratio"]
        lines.append(
            f"| {case['prompt_tokens']} | {interval(r['ttft'])} | {interval(r['decode_tps'])} | "
            + (f"{interval(prr['ttft'])} | {interval(prr['decode_tps'])} | " if prr else "")
            + f"{', '.join(case['stopped_by'])} |"
        )
    lines += ["", "### Targets", ""]
    for t in c["summary"]["targets"]:
        sign = "≥" if t["direction"] == "at_least" else "≤"
        said = t["verdict"]
        if said == NOT_MEASURABLE:
            said += (
                " (too few runs for an interval)"
                if t["ci_low"] is None
                else " (the interval spans the target: more runs or a quieter machine)"
            )
        lines.append(
            f"- {t['figure']}, {t['prompt_tokens']}-token prompt: "
            f"{interval(t)} against {sign} {t['target']:g}: **{said}**"
        )
    s = c["summary"]
    lines += [
        "",
        f"Server RSS after the runs: {fmt(s['server_rss_mib'], 0)} MiB; MLX's own peak "
        f"(where Metal memory shows): {fmt(s['server_mlx_peak_mib'], 0)} MiB"
        + (f"; peer RSS: {fmt(s['peer_rss_mib'], 0)} MiB." if s["peer_rss_mib"] else "."),
        "",
        "### Where the server's time to first token goes",
        "",
        "The client times the server's TTFT; raw mlx-lm's starts at its prefill. The server logs "
        "its own phases for every answer (`timing` in its log): HTTP in (parsing, validation, "
        "admission), the engine queue, chat template + tokenize, set-up (prompt cache, grammar), "
        "then prefill + first token on the engine thread. Outside is the rest of the client's "
        "TTFT: the network both ways, Sanic reading the request, the SSE write. Medians, ms.",
        "",
        "| prompt tokens | raw TTFT | server TTFT | added | HTTP in | queue "
        "| template + tokenize | set-up | prefill + first token | outside "
        "| prefill + first token / raw TTFT |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in c["cases"]:
        cost = case["server_cost"]
        raw_ms = case["raw"]["ttft_s"]["median"]
        srv_ms = case["server"]["ttft_s"]["median"]
        inside = case["server"]["inside"]
        ph = inside["phases_ms"]
        lines.append(
            f"| {case['prompt_tokens']} | {fmt(raw_ms and raw_ms * 1e3, 1)} "
            f"| {fmt(srv_ms and srv_ms * 1e3, 1)} | {fmt(cost['ttft_added_ms'], 1)} "
            + "".join(
                f"| {fmt(ph[n]['median'], 2)} "
                for n in ("http_ms", "queue_ms", "prompt_ms", "setup_ms", "first_token_ms")
            )
            + f"| {fmt(ph['outside_ms']['median'], 2)} "
            f"| {interval(inside['ratio']['first_token_vs_raw_ttft'])} |"
        )
    lines += [
        "",
        "### Where a decode gap lies",
        "",
        "The engine's rate is timed on its thread, from the first token read back from MLX to "
        "the last; the client's from the first text it received to the last. Engine/raw "
        "below 1 is a cost in the generation loop or in MLX as the server drives it; client/"
        "engine below 1 is one in delivering tokens (channel, event loop, HTTP).",
        "",
        "| prompt tokens | raw tok/s | engine tok/s | client tok/s | engine/raw | client/engine |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for case in c["cases"]:
        inside = case["server"]["inside"]
        lines.append(
            f"| {case['prompt_tokens']} | {_cell(case['raw']['decode_tps'], 2)} "
            f"| {_cell(inside['decode_tps'], 2)} | {_cell(case['server']['decode_tps'], 2)} "
            f"| {interval(inside['ratio']['decode_vs_raw'])} "
            f"| {interval(inside['ratio']['client_decode_vs_inside'])} |"
        )
    return lines


def _structured(so: Structured) -> list[str]:
    """The structured-output table: the schema answer with the grammar and without it."""
    rows = [
        "",
        (
            f"## Structured output ({so['keys']} fixed keys, at most {so['max_tokens']} tokens; "
            "the same question with the schema as `response_format`, and only asked in words)"
        ),
        "",
        "| side | complete answer s | s per decoded token | tokens | valid JSON |",
        "|---|---:|---:|---:|---:|",
    ]
    for side in ("constrained", "prompted"):
        f = so[side]
        tokens = ", ".join(str(t) for t in f["completion_tokens"])
        rows.append(
            f"| {side} | {_cell(f['complete_s'], 3)} | {_cell(f['per_token_s'], 4)} "
            f"| {tokens} | {f['valid']}/{f['runs']} |"
        )
    rows += [
        "",
        (
            f"Complete answer, constrained/prompted: **{interval(so['complete_ratio'])}** "
            "(target < 1: the grammar's fixed keys go in as one batch). Decode speed, "
            f"constrained/prompted: **{interval(so['decode_ratio'])}** (target ≥ 0.95 at GPU speed)."
        ),
    ]
    return rows


def _spec_row(name: str, side: SpeculationSide) -> str:
    drafted = [d for d in side["drafted"] if d is not None]
    accepted = [a for a in side["accepted"] if a is not None]
    return (
        f"| {name} | {_cell(side['ttft_s'], 3)} | {_cell(side['decode_tps'])} "
        f"| {_cell(side['engine_decode_tps'])} | {sum(side['completion_tokens'])} "
        f"| {sum(drafted) if drafted else '–'} | {sum(accepted) if accepted else '–'} |"
    )


def _speculation(sp: Speculation) -> list[str]:
    """The speculation table: each kind of prompt, speculation on beside off."""
    t = sp["target"]
    lines = [
        "",
        (
            f"## Speculative decoding, {sp['workload']} workload ({sp['mode']} on beside off, "
            f"{sp['gen_tokens']} tokens at most, {sp['runs']} runs a kind and side, {sp['order']})"
        ),
        "",
        "| kind | side | TTFT s | client decode tok/s | engine decode tok/s | tokens | drafted "
        "| accepted |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k in sp["kinds"]:
        lines.append(_spec_row(f"{k['kind']} | on", k["on"]))
        lines.append(_spec_row(f"{k['kind']} | off", k["off"]))
    lines += [
        "",
        "| kind | decode on/off | acceptance rate | tokens per verify step | same answers |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in sp["kinds"]:
        lines.append(
            f"| {k['kind']} | {interval(k['decode_ratio'])} | {_cell(k['acceptance_rate'])} "
            f"| {_cell(k['tokens_per_step'])} | {k['same_answers']}/{len(k['on']['completion_tokens'])} |"
        )
    said = t["verdict"]
    lines += [
        "",
        (
            f"All kinds: decode tok/s on/off **{interval(sp['decode_ratio'])}** against ≥ "
            f"{t['target']:g}: **{said}**; acceptance rate {_cell(sp['acceptance_rate'])}, "
            f"tokens per verify step {_cell(sp['tokens_per_step'])}."
        ),
    ]
    if not sp["logged_drafts"]:
        lines.append(
            "The server logged no `drafted=`/`accepted=` figures: it does not speculate yet."
        )
    return lines


def _agent_turn(at: AgentTurn) -> list[str]:
    """The agent-turn table: a changed volatile first line beside an unchanged one."""
    return [
        "",
        (
            f"## An agent's second turn (~{at['prefix_tokens']}-token system prompt opening "
            f"with {at['volatile_line']}; /v1/messages, prompt cache on)"
        ),
        "",
        "| second turn | TTFT s | cached prompt tokens |",
        "|---|---:|---:|",
        (
            f"| header line changed | {_cell(at['changed'], 3)} "
            f"| {', '.join(str(n) for n in at['changed_cached_tokens'])} |"
        ),
        (
            f"| unchanged ({at['baseline']}) | {_cell(at['unchanged'], 3)} "
            f"| {', '.join(str(n) for n in at['unchanged_cached_tokens'])} |"
        ),
        "",
        (
            f"Changed/unchanged TTFT: **{interval(at['ratio'])}** (1.0: the volatile line costs "
            "nothing)."
        ),
    ]
