"""The comparison's bookkeeping on recorded runs: figures of a stream, when a cell stops, order."""

from __future__ import annotations

import time

from tholos_mlx.bench.cases import decode
from tholos_mlx.bench.sides.client import StreamStats, figures


def _stream(usage: dict[str, object] | None, chunks: int) -> StreamStats:
    run = StreamStats(sent_at=10.0, first_content_at=10.5, last_content_at=11.5, frames=chunks)
    run.usage = usage
    return run


def test_a_stream_s_figures_count_tokens_from_its_usage() -> None:
    usage = {"completion_tokens": 11, "prompt_tokens": 32, "prompt_tokens_details": {}}
    fig = figures(_stream(usage, chunks=6), gen_tokens=11)
    assert fig["ttft_s"] == 0.5 and fig["decode_tps"] == 10.0
    assert fig["completion_tokens"] == 11 and fig["prompt_tokens"] == 32
    assert fig["tokens_from"] == "usage" and not fig["stopped_early"]


def test_a_peer_that_sends_no_usage_is_counted_by_its_content_chunks() -> None:
    fig = figures(_stream(None, chunks=6), gen_tokens=11)
    assert fig["completion_tokens"] == 6 and fig["decode_tps"] == 5.0
    assert fig["tokens_from"] == "chunks" and fig["stopped_early"]


def _cell(values: dict[str, list[float]]) -> decode.Cell:
    cell = decode.Cell(32)
    for side, rates in values.items():
        cell.runs[side] = [{"ttft_s": 1.0 / r, "decode_tps": r} for r in rates]
    return cell


STEADY = [100.0, 100.4, 99.7, 100.2, 99.9]
NOISY = [100.0, 140.0, 70.0, 125.0, 85.0]


def test_auto_runs_stop_once_every_ratio_is_within_three_percent() -> None:
    far = time.monotonic() + 3600
    steady = _cell({"raw": STEADY, "server": STEADY})
    assert decode._stop(steady, ["raw", "server"], None, 5, far) == "interval"
    noisy = _cell({"raw": STEADY, "server": NOISY})
    assert decode._stop(noisy, ["raw", "server"], None, 5, far) == ""
    assert decode._stop(noisy, ["raw", "server"], None, 5, time.monotonic()) == "time cap"


def test_auto_runs_never_stop_on_an_interval_before_five_runs() -> None:
    few = _cell({"raw": STEADY[:3], "server": STEADY[:3]})
    assert decode._stop(few, ["raw", "server"], None, 3, time.monotonic() + 3600) == ""


def test_a_peer_s_ratios_count_too() -> None:
    cell = _cell({"raw": STEADY, "server": STEADY, "peer": NOISY})
    assert sorted(cell.ratios()) == [
        "peer.decode_tps",
        "peer.ttft_s",
        "raw.decode_tps",
        "raw.ttft_s",
    ]
    assert not cell.precise(["raw", "server", "peer"])


def test_a_side_measured_alone_stops_on_its_own_spread() -> None:
    assert _cell({"raw": STEADY}).precise(["raw"])
    assert not _cell({"raw": NOISY}).precise(["raw"])


def test_fixed_runs_are_left_to_the_loop() -> None:
    cell = _cell({"raw": NOISY, "server": NOISY})
    assert decode._stop(cell, ["raw", "server"], 5, 5, time.monotonic()) == ""


def test_each_round_starts_with_another_side() -> None:
    sides = ["raw", "server", "peer"]
    firsts = [decode._rotated(sides, i)[0] for i in range(-1, 5)]
    assert firsts == ["peer", "raw", "server", "peer", "raw", "server"]
    assert sorted(decode._rotated(sides, 7)) == sorted(sides)
