"""Benchmark results: the machine they came from, their statistics, JSON, Markdown and a chart."""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import re
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from tholos_mlx import machine
from tholos_mlx.home import write_atomic

SCHEMA = 1


def stats(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max of the runs (None values, e.g. no decode time, are left out)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "values": got}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing."""
    return a / b if a is not None and b else None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            check=False,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(mlx_device: str) -> dict[str, Any]:
    """The machine and software a result was measured on, so results can be laid side by side."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    memory = machine.total_memory_bytes()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "chip": machine.chip_name(),
            "memory_bytes": memory,
            "memory_gib": round(memory / 2**30, 1),
            "os": machine.os_name(),
            "arch": platform.machine(),
            "cpu_count": os.cpu_count() or 0,
            "mlx_device": mlx_device,
        },
        "software": {
            "python": platform.python_version(),
            "mlx": _version("mlx"),
            "mlx-lm": _version("mlx-lm"),
            "tholos-mlx": _version("tholos-mlx"),
            "git_commit": commit or "unknown",
            "git_dirty": bool(status),
        },
    }


def num(value: float | None, digits: int = 2) -> str:
    """A figure for a progress or headline line; – when missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def slug(text: str) -> str:
    """A file-name-safe short form of a chip name."""
    s = re.sub(r"\((r|tm)\)", "", text.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s[:40].rstrip("-") or "unknown"


def stem(result: dict[str, Any]) -> str:
    """Result file names: date and chip, e.g. 20260301-101500-apple-m3-pro."""
    when = dt.datetime.fromisoformat(result["date"])
    return f"{when:%Y%m%d-%H%M%S}-{slug(result['machine']['chip'])}"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _cell(s: dict[str, Any], digits: int = 2, scale: float = 1.0) -> str:
    if s.get("median") is None:
        return "–"
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{_fmt(med, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown tables: median (min–max) of the runs."""
    m, sw = result["machine"], result["software"]
    lines = [
        f"# tholos-mlx bench, {result['date']}",
        "",
        (
            f"- Machine: {m['chip']}, {m['memory_gib']} GiB, {m['os']} "
            f"({m['arch']}, {m['cpu_count']} cores), MLX device: {m['mlx_device']}"
        ),
        (
            f"- Software: tholos-mlx {sw['tholos-mlx']} (commit {sw['git_commit'][:12]}"
            f"{', uncommitted changes' if sw['git_dirty'] else ''}), mlx {sw['mlx']}, "
            f"mlx-lm {sw['mlx-lm']}, Python {sw['python']}"
        ),
    ]
    if result.get("model"):
        mo = result["model"]
        lines.append(
            f"- Model: `{mo['id']}` (tier {mo['tier']}, {mo['weights_mib']:.0f} MiB of weights)"
        )
    lines.append("- Each figure: median (min–max) of the runs, after discarded warm-up runs.")
    compare = result.get("compare")
    if compare:
        lines += [
            "",
            (
                f"## Raw mlx-lm vs the server ({compare['gen_tokens']} generated tokens, "
                f"{compare['runs']} runs, {compare['order']})"
            ),
            "",
            (
                "| prompt tokens | raw TTFT s | server TTFT s | TTFT ratio | raw prefill tok/s "
                "| raw decode tok/s | server decode tok/s | decode ratio | raw peak MiB "
                "| early stops |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for case in compare["cases"]:
            raw, srv, r = case["raw"], case["server"], case["ratio"]
            lines.append(
                f"| {case['prompt_tokens']} | {_cell(raw['ttft_s'])} | {_cell(srv['ttft_s'])} "
                f"| {_fmt(r['ttft'], 3)} | {_cell(raw['prefill_tps'], 1)} "
                f"| {_cell(raw['decode_tps'], 2)} "
                f"| {_cell(srv['decode_tps'], 2)} | {_fmt(r['decode_tps'], 3)} "
                f"| {_cell(raw['peak_memory_bytes'], 0, 2**-20)} | {srv['stopped_early']} |"
            )
        s = compare["summary"]
        lines += [
            "",
            (
                "Server/raw, median over prompt sizes: decode tok/s "
                f"**{_fmt(s['decode_ratio'], 3)}** "
                f"(target ≥ 0.98), TTFT **{_fmt(s['ttft_ratio'], 3)}** (1.0 = no added latency). "
                f"Server RSS after the runs: {s['server_rss_mib']:.0f} MiB."
            ),
        ]
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
                f"| first (cold) | {_fmt(cached['cold']['ttft_s'], 3)} "
                f"| {cached['cold']['cached_tokens']} |"
            ),
            (
                f"| later (warm), {len(cached['warm'])} | {_cell(cached['warm_ttft_s'], 3)} "
                f"| {', '.join(str(w['cached_tokens']) for w in cached['warm'])} |"
            ),
            "",
            f"Warm/cold TTFT: **{_fmt(cached['warm_cold_ratio'], 3)}** (target ≤ 0.10).",
        ]
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
        for name, mo in (("as fast as it can (flood)", fl), ("one per frame (lockstep)", ls)):
            lines.append(
                f"| {name} | {_cell(mo['tokens_per_s'], 0)} | {_cell(mo['wall_us_per_token'], 1)} "
                f"| {_cell(mo['frames_per_s'], 0)} | {_cell(mo['tokens_per_frame'], 1)} "
                f"| {_cell(mo['loop_cpu_us_per_frame'], 1)} "
                f"| {_cell(mo['engine_cpu_us_per_token'], 1)} |"
            )
        lines += [
            "",
            (
                f"Target: ≥ {ceiling['target_tokens_per_s']:,} tokens/s to one client and < "
                f"{ceiling['target_us_per_token']:g} µs of server work a token. Delivered: "
                f"**{_fmt(ceiling['tokens_per_s'], 0)} tokens/s**; per token, at one token per "
                f"frame, the event loop spends **{_fmt(ceiling['us_per_token'], 1)} µs** of CPU "
                f"({_fmt(ls['tokens_per_s']['median'], 0)} tokens/s wall, thread hand-offs "
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
                    f"{_fmt(prof['profiled_us_per_token'], 1)} µs/token while profiled), "
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
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> bool:
    """A PNG of tokens/s and TTFT by prompt size; False when matplotlib is not installed."""
    compare = result.get("compare")
    if not compare:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator, ScalarFormatter
    except ImportError:
        return False
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines are noise here
    cases = compare["cases"]
    x = [c["prompt_tokens"] for c in cases]

    def med(side: str, name: str) -> list[float]:
        return [c[side][name]["median"] or 0.0 for c in cases]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = (
        ("raw prefill", "raw", "prefill_tps", "o--"),
        ("raw decode", "raw", "decode_tps", "o-"),
        ("server decode", "server", "decode_tps", "s-"),
    )
    for label, side, name, style in series:
        left.plot(x, med(side, name), style, label=label)
    tps = [v for _, side, name, _ in series for v in med(side, name) if v > 0]
    if tps and max(tps) > 20 * min(tps):  # prefill and decode rates far apart: log scale
        left.set_yscale("log")
        left.yaxis.set_major_formatter(ScalarFormatter())
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(x, [str(n) for n in x])
        ax.xaxis.set_minor_locator(NullLocator())
    left.set_xlabel("prompt tokens")
    left.set_ylabel("tokens/s")
    left.set_title("Tokens per second")
    left.legend()
    right.plot(x, med("raw", "ttft_s"), "o-", label="raw mlx-lm")
    right.plot(x, med("server", "ttft_s"), "s-", label="server (client-side)")
    right.set_xlabel("prompt tokens")
    right.set_ylabel("seconds")
    right.set_title("Time to first token")
    right.legend()
    m = result["machine"]
    fig.suptitle(
        f"{result['model']['id']} on {m['chip']} ({m['mlx_device']}), {result['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """Write NAME.json, NAME.md and (with matplotlib) NAME.png under `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / stem(result)
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    write_atomic(paths[0], orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    write_atomic(paths[1], markdown(result).encode("utf-8"))
    png = base.with_suffix(".png")
    if chart(result, png):
        paths.append(png)
    return paths
