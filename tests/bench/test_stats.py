"""The bench's statistics on recorded samples: medians, bootstrap intervals, verdicts."""

from __future__ import annotations

import statistics

import pytest

from tholos_mlx.bench import stats

# Decode tok/s of 12 runs each, as a 1B model gave them on a GPU (raw ranged 277–426 in one cell).
RAW = [325.0, 331.2, 298.4, 340.1, 277.3, 426.0, 318.9, 329.5, 335.7, 301.2, 322.4, 327.8]
SERVER = [286.1, 290.4, 279.9, 301.5, 262.0, 295.3, 288.8, 284.2, 292.7, 281.6, 287.0, 289.9]


def test_summary_leaves_out_missing_values_and_gives_median_min_max() -> None:
    assert stats.summary([3.0, None, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "values": [3.0, 1.0, 2.0],
    }
    assert stats.summary([None])["median"] is None
    assert stats.ratio(1.0, None) is None and stats.ratio(1.0, 4.0) == 0.25


def test_a_ratio_comes_with_an_interval_around_it() -> None:
    ci = stats.ratio_ci(SERVER, RAW)
    assert ci["value"] == pytest.approx(statistics.median(SERVER) / statistics.median(RAW))
    assert ci["ci_low"] < ci["value"] < ci["ci_high"]
    assert ci["half_width"] == pytest.approx((ci["ci_high"] - ci["ci_low"]) / 2 / ci["value"])
    assert ci["runs"] == [12, 12]


def test_the_interval_is_the_same_every_time_it_is_computed() -> None:
    assert stats.ratio_ci(SERVER, RAW) == stats.ratio_ci(SERVER, RAW)
    assert stats.ratio_ci(SERVER, RAW, seed=1) != stats.ratio_ci(SERVER, RAW, seed=2)


def test_more_runs_narrow_the_interval() -> None:
    few = stats.ratio_ci(SERVER[:4], RAW[:4])
    many = stats.ratio_ci(SERVER * 4, RAW * 4)
    assert many["half_width"] < few["half_width"]


def test_too_few_runs_give_no_interval_rather_than_a_falsely_narrow_one() -> None:
    ci = stats.ratio_ci([1.0, 1.0], [2.0, 2.0])
    assert ci["value"] == 0.5
    assert ci["ci_low"] is None and ci["ci_high"] is None and ci["half_width"] is None
    assert stats.verdict(ci, 0.98, "at_least") == stats.NOT_MEASURABLE
    assert not stats.precise(ci)


def test_missing_values_are_left_out_of_the_ratio() -> None:
    ci = stats.ratio_ci([None, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, None])
    assert ci["value"] == 2.0 and ci["runs"] == [3, 3]
    assert stats.ratio_ci([None], [1.0])["value"] is None


def test_verdict_is_met_missed_or_not_measurable_by_where_the_interval_lies() -> None:
    def ci(low: float, high: float) -> dict[str, float]:
        return {"value": (low + high) / 2, "ci_low": low, "ci_high": high}

    assert stats.verdict(ci(0.99, 1.02), 0.98, "at_least") == "met"
    assert stats.verdict(ci(0.90, 0.97), 0.98, "at_least") == "missed"
    assert stats.verdict(ci(0.95, 1.01), 0.98, "at_least") == stats.NOT_MEASURABLE
    assert stats.verdict(ci(0.97, 1.04), 1.05, "at_most") == "met"
    assert stats.verdict(ci(1.06, 1.20), 1.05, "at_most") == "missed"
    assert stats.verdict(ci(1.00, 1.10), 1.05, "at_most") == stats.NOT_MEASURABLE


def test_the_recorded_gpu_cell_says_the_server_decodes_slower_than_raw() -> None:
    ci = stats.ratio_ci(SERVER, RAW)
    assert stats.verdict(ci, 0.98, "at_least") == "missed"


def test_precise_means_a_half_width_of_at_most_three_percent() -> None:
    assert stats.precise({"half_width": 0.03}) and not stats.precise({"half_width": 0.031})
    steady = [100.0, 100.5, 99.5, 100.2, 99.8, 100.1]
    assert stats.precise(stats.ratio_ci(steady, steady))
    assert not stats.precise(stats.ratio_ci(SERVER[:5], RAW[:5]))
