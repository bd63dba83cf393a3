"""Benchmark results: the machine they came from, their file names, the files, the headlines."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from tholos_mlx import machine
from tholos_mlx.bench.markdown import interval, markdown
from tholos_mlx.home import write_atomic

SCHEMA = 2  # 2: ratios carry intervals; peer, synthetic, structured_output


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


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """Write NAME.json, NAME.md and (with matplotlib) NAME.png under `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / stem(result)
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    write_atomic(paths[0], orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    write_atomic(paths[1], markdown(result).encode("utf-8"))
    png = base.with_suffix(".png")
    from tholos_mlx.bench.chart import chart

    if chart(result, png):
        paths.append(png)
    return paths


def headlines(result: dict[str, Any]) -> str:
    """The figures a reader wants first, one per line."""
    m = result["machine"]
    lines = [f"{m['chip']} ({m['mlx_device']}), {result['date']}"]
    model = result.get("model")
    if model and model.get("synthetic"):
        lines.append(f"model: {model['id']}, random weights ({model['synthetic']['shape']} shape)")
    compare = result.get("compare")
    if compare:
        for case in compare["cases"]:
            raw, srv, r = case["raw"], case["server"], case["ratio"]
            line = (
                f"prompt {case['prompt_tokens']:>6}: TTFT raw {num(raw['ttft_s']['median'], 3)} s, "
                f"server {num(srv['ttft_s']['median'], 3)} s (x{interval(r['ttft'])}); decode raw "
                f"{num(raw['decode_tps']['median'])} tok/s, "
                f"server {num(srv['decode_tps']['median'])} tok/s (x{interval(r['decode_tps'])})"
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
            f"cached prefix: cold TTFT {num(cached['cold']['ttft_s'], 3)} s, warm "
            f"{num(cached['warm_ttft_s']['median'], 3)} s, "
            f"warm/cold {num(cached['warm_cold_ratio'], 3)} (target <= 0.10)"
        )
    restarted = result.get("after_restart")
    if restarted:
        lines.append(
            f"prompt cache after a restart: cold TTFT {num(restarted['cold']['ttft_s'], 3)} s, "
            f"after restart {num(restarted['after_restart']['ttft_s'], 3)} s "
            f"({restarted['after_restart']['cached_tokens']} tokens from disk), "
            f"{num(restarted['speedup'], 1)}x sooner (target >= {restarted['target_speedup']:g}x)"
        )
    so = result.get("structured_output")
    if so:
        lines.append(
            f"structured output: complete answer constrained/prompted x{interval(so['complete_ratio'])} "
            f"(target < 1), decode x{interval(so['decode_ratio'])} (target >= 0.95); valid "
            f"{so['constrained']['valid']}/{so['constrained']['runs']} constrained, "
            f"{so['prompted']['valid']}/{so['prompted']['runs']} prompted"
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
