"""The statistics of a benchmark: median, min and max of runs, and ratios with bootstrap intervals.

At GPU speeds one run's decode rate can differ from the next by a third, so a ratio of two
medians means little without its uncertainty: every ratio carries a 95% confidence interval,
found by resampling each side's runs (seeded, so a result file can be recomputed exactly).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tholos_mlx.bench.results import NOT_MEASURABLE, Direction, Ratio, Stat

if TYPE_CHECKING:
    import numpy as np

RESAMPLES = 4000
SEED = 20260301
MIN_RUNS_FOR_CI = 3  # fewer runs give an interval that looks narrow and means nothing
TARGET_HALF_WIDTH = 0.03  # --runs auto stops once every ratio is known within ±3%
__all__ = ["NOT_MEASURABLE", "Direction", "precise", "ratio", "ratio_ci", "summary", "verdict"]


def summary(values: Sequence[float | None]) -> Stat:
    """Median, min and max of the runs (None values, e.g. no decode time, are left out)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "values": got}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing."""
    return a / b if a is not None and b else None


def _medians(values: list[float], rng: np.random.Generator) -> Any:
    """RESAMPLES medians of the values drawn with replacement."""
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    picks = rng.integers(0, len(data), size=(RESAMPLES, len(data)))
    return np.median(data[picks], axis=1)


def ratio_ci(
    top: Sequence[float | None], bottom: Sequence[float | None], seed: int = SEED
) -> Ratio:
    """median(top) / median(bottom) with a 95% percentile-bootstrap interval over the runs.

    The two sides are resampled independently. `half_width` is half the interval relative to
    the ratio (0.03 = ±3%); the interval and its width are None below MIN_RUNS_FOR_CI runs a side.
    """
    a = [float(v) for v in top if v is not None]
    b = [float(v) for v in bottom if v is not None]
    value = ratio(statistics.median(a), statistics.median(b)) if a and b else None
    out: Ratio = {
        "value": value,
        "ci_low": None,
        "ci_high": None,
        "half_width": None,
        "runs": [len(a), len(b)],
    }
    if value is None or min(len(a), len(b)) < MIN_RUNS_FOR_CI or min(b) <= 0:
        return out
    import numpy as np  # here, not at the top: cli.py imports the bench package on every command

    rng = np.random.default_rng(seed)
    ratios = _medians(a, rng) / _medians(b, rng)
    low, high = (float(x) for x in np.percentile(ratios, [2.5, 97.5]))
    out["ci_low"], out["ci_high"] = low, high
    out["half_width"] = (high - low) / 2 / value
    return out


def precise(ci: Mapping[str, Any], limit: float = TARGET_HALF_WIDTH) -> bool:
    """Whether an interval is known and its half-width at most `limit` of the ratio."""
    width = ci.get("half_width")
    return width is not None and width <= limit


def verdict(ci: Mapping[str, Any], target: float, direction: Direction) -> str:
    """'met', 'missed', or 'not measurable here' when the interval does not decide."""
    low, high = ci.get("ci_low"), ci.get("ci_high")
    if low is None or high is None:
        return NOT_MEASURABLE
    good, bad = (low >= target, high < target)
    if direction == "at_most":
        good, bad = (high <= target, low > target)
    return "met" if good else "missed" if bad else NOT_MEASURABLE
