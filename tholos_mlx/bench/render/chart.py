"""A benchmark result as a PNG: rates, times to first token and ratios (with intervals) by prompt size."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tholos_mlx.bench.results import DECODE_TARGET, TTFT_TARGET, CompareCase, Result


def chart(result: Result, path: Path) -> bool:
    """Write the chart of a comparison; False when there is none or matplotlib is missing."""
    compare = result.get("compare")
    if not compare:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        return False
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines are noise here
    cases = compare["cases"]
    peer = compare["peer"]
    x = [c["prompt_tokens"] for c in cases]

    def med(side: str, name: str) -> list[float]:
        return [
            (_stat(c, side, name)["median"] if _stat(c, side, name) else None) or 0.0 for c in cases
        ]

    fig, (rates, ttft, ratios) = plt.subplots(1, 3, figsize=(16, 4.6))
    series = [
        ("raw prefill", "raw", "prefill_tps", "o--"),
        ("raw decode", "raw", "decode_tps", "o-"),
        ("server decode", "server", "decode_tps", "s-"),
    ]
    if peer:
        series.append(("peer decode", "peer", "decode_tps", "^-"))
    for label, side, name, style in series:
        rates.plot(x, med(side, name), style, label=label)
    tps = [v for _, side, name, _ in series for v in med(side, name) if v > 0]
    if tps and max(tps) > 20 * min(tps):  # prefill and decode rates far apart: log scale
        rates.set_yscale("log")
        rates.yaxis.set_major_formatter(ScalarFormatter())
    rates.set(xlabel="prompt tokens", ylabel="tokens/s", title="Tokens per second")
    ttft.plot(x, med("raw", "ttft_s"), "o-", label="raw mlx-lm")
    ttft.plot(x, med("server", "ttft_s"), "s-", label="server (client-side)")
    if peer:
        ttft.plot(x, med("peer", "ttft_s"), "^-", label="peer (client-side)")
    ttft.set(xlabel="prompt tokens", ylabel="seconds", title="Time to first token")
    _ratios(ratios, cases, x, bool(peer))
    for ax in (rates, ttft, ratios):
        ax.set_xscale("log")
        ax.set_xticks(x, [str(n) for n in x])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    m, mo = result["machine"], result["model"]
    random = " (random weights)" if mo and mo["synthetic"] else ""
    fig.suptitle(
        f"{mo['id'] if mo else ''}{random} on {m['chip']} ({m['mlx_device']}), {result['date'][:10]}"
        + (f"; peer: {peer['name']}" if peer else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _stat(case: CompareCase, side: str, name: str) -> Any:
    """One side's figure of a case by name (the chart's series are named, not typed)."""
    group: Any = case.get(side)
    return group.get(name) if group else None


def _ratios(ax: Any, cases: list[CompareCase], x: list[int], peer: bool) -> None:
    """Each ratio's value with its 95% interval as an error bar; 1.0 and the targets as lines."""
    series = [("decode server/raw", "ratio", "decode_tps"), ("TTFT server/raw", "ratio", "ttft")]
    if peer:
        series += [
            ("decode tholos/peer", "peer_ratio", "decode_tps"),
            ("TTFT tholos/peer", "peer_ratio", "ttft"),
        ]
    for k, (label, group, name) in enumerate(series):
        xs: list[float] = []
        ys: list[float] = []
        err: list[list[float]] = [[], []]
        for n, c in zip(x, cases):
            ci = _stat(c, group, name)
            if not ci or ci["value"] is None:
                continue
            xs.append(n * (1 + 0.04 * (k - 1.5)))  # side by side, not on top of each other
            ys.append(ci["value"])
            low, high = ci["ci_low"], ci["ci_high"]
            err[0].append(ci["value"] - low if low is not None else 0.0)
            err[1].append(high - ci["value"] if high is not None else 0.0)
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=label)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(DECODE_TARGET, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(TTFT_TARGET, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="prompt tokens", ylabel="ratio", title="Ratios, 95% intervals (targets dotted)")
