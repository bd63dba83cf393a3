"""The typed result of results.py declares what the result files hold, key for key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from tests.bench import results as written
from tholos_mlx.bench import results

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def keys(shape: Any) -> set[str]:
    return set(get_type_hints(shape))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (results.Stat, written.STAT),
        (results.Ratio, written.CI),
        (results.Machine, written.MACHINE),
        (results.Software, written.SOFTWARE),
        (results.ModelInfo, written.MODEL),
        (results.Compare, written.COMPARE),
        (results.CompareCase, written.CASE),
        (results.PeerInfo, written.PEER),
        (results.CompareSummary, written.SUMMARY),
        (results.Judged, written.TARGET),
    ],
)
def test_each_typed_shape_has_exactly_the_keys_the_files_hold(
    shape: Any, expected: set[str]
) -> None:
    assert keys(shape) == expected


def test_a_result_requires_the_keys_every_file_has_and_only_later_cases_are_optional() -> None:
    assert set(results.Result.__required_keys__) == written.TOP
    assert set(results.Result.__optional_keys__) == {"speculation", "agent_turn"}


def test_the_latest_committed_comparison_has_the_declared_shape() -> None:
    result = json.loads((RESULTS / "20261130-025624-amd-epyc.json").read_text())
    assert set(result) == set(results.Result.__required_keys__)
    compare = result["compare"]
    assert set(compare) == keys(results.Compare)
    (case, *_) = compare["cases"]
    assert set(case) == keys(results.CompareCase)
    assert set(case["server"]) == keys(results.Served)  # ours: template and inside included
    assert set(case["server"]["inside"]) == keys(results.Inside)
