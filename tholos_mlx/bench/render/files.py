"""A result's files: NAME.json, NAME.md and (with matplotlib) NAME.png, named by date and chip."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import orjson

from tholos_mlx.bench.render.chart import chart
from tholos_mlx.bench.render.markdown import markdown
from tholos_mlx.bench.results import Result
from tholos_mlx.home import write_atomic


def slug(text: str) -> str:
    """A file-name-safe short form of a chip name."""
    s = re.sub(r"\((r|tm)\)", "", text.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s[:40].rstrip("-") or "unknown"


def stem(result: Result) -> str:
    """Result file names: date and chip, e.g. 20260301-101500-apple-m3-pro."""
    when = dt.datetime.fromisoformat(result["date"])
    return f"{when:%Y%m%d-%H%M%S}-{slug(result['machine']['chip'])}"


def write(result: Result, out: Path) -> list[Path]:
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
