"""Figures as text: one number, a median with its range, a ratio with its interval."""

from __future__ import annotations

from tholos_mlx.bench.results import Judged, Ratio, Stat


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a table or a line: thousands without decimals, – when missing."""
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def cell(s: Stat | None, digits: int = 2, scale: float = 1.0) -> str:
    """A median with its min–max: '4.51 (3.65–4.52)'."""
    if not s or s["median"] is None or s["min"] is None or s["max"] is None:
        return "–"
    med, lo, hi = (x * scale for x in (s["median"], s["min"], s["max"]))
    return f"{fmt(med, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def interval(ci: Ratio | Judged | None) -> str:
    """A ratio and its 95% interval: '1.006 (0.990–1.021)'."""
    if not ci or ci["value"] is None:
        return "–"
    if ci["ci_low"] is None or ci["ci_high"] is None:
        return f"{ci['value']:.3f} (too few runs for an interval)"
    return f"{ci['value']:.3f} ({ci['ci_low']:.3f}–{ci['ci_high']:.3f})"
