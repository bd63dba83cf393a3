"""The timing line: figures from stamps, the line the engine logs, and bench's reading of it."""

from __future__ import annotations

import pytest

from tholos_mlx import timings
from tholos_mlx.timings import FIELDS, Timings


def stamped() -> Timings:
    t = Timings(arrived=100.0, queued=100.0005)
    t.started, t.prompted, t.generating = 100.0015, 100.0045, 100.0050
    t.first_token, t.last_token, t.tokens = 100.0550, 100.1550, 11
    return t


def test_each_phase_is_the_time_between_its_two_stamps() -> None:
    got = stamped().figures()
    assert list(got) == list(FIELDS)
    expected = {"http_ms": 0.5, "queue_ms": 1.0, "prompt_ms": 3.0, "setup_ms": 0.5}
    for name, ms in expected.items():
        assert got[name] == pytest.approx(ms, abs=1e-6)
    assert got["first_token_ms"] == pytest.approx(50.0, abs=1e-6)
    assert got["decode_tps"] == pytest.approx(10 / 0.1)  # 11 tokens: 10 gaps in 100 ms


def test_the_logged_line_reads_back_as_the_same_figures() -> None:
    t = stamped()
    line = f"12:00:00 INFO tholos.engine: m: 5 prompt tokens, finish length; {t.line()}"
    back = timings.parse(line)
    assert back is not None
    for name, value in t.figures().items():
        assert back[name] == pytest.approx(value, abs=0.01)


def test_what_is_unknown_is_a_dash_and_reads_back_as_none() -> None:
    t = Timings(arrived=None, queued=1.0)  # no HTTP stamp (an in-process caller), no tokens
    t.started = t.prompted = t.generating = 1.001
    line = t.line()
    assert "http_ms=- " in line
    assert line.endswith("first_token_ms=- decode_tps=-")
    back = timings.parse(f"x {line}")
    assert back is not None
    assert back["http_ms"] is None and back["decode_tps"] is None
    assert back["queue_ms"] == pytest.approx(1.0)


def test_one_token_has_no_decode_rate() -> None:
    t = stamped()
    t.tokens, t.last_token = 1, t.first_token
    assert t.figures()["decode_tps"] is None


@pytest.mark.parametrize(
    "line",
    [
        "INFO tholos.engine: loaded smollm2-135m in 0.4 s",
        "INFO x: timing http_ms=1.00 queue_ms=2.00",  # a line cut short
        "INFO x: timingless http_ms=1.00",
    ],
)
def test_a_line_without_the_whole_timing_reads_as_none(line: str) -> None:
    assert timings.parse(line) is None


def test_the_draft_counts_end_the_line_and_read_back() -> None:
    t = stamped()
    t.drafted, t.accepted = 12, 9
    line = t.line()
    assert line.endswith(" drafted=12 accepted=9")
    back = timings.parse(f"m: 5 prompt tokens; {line}")
    assert back is not None and (back["drafted"], back["accepted"]) == (12, 9)


def test_an_answer_not_speculated_has_no_draft_counts_in_its_line() -> None:
    line = stamped().line()
    assert "drafted" not in line
    back = timings.parse(f"x {line}")
    assert back is not None and "drafted" not in back
