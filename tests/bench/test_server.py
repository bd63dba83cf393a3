"""The bench's view of a server's log: each run reads only the timing lines that are new."""

from __future__ import annotations

from pathlib import Path

from tholos_mlx.bench.sides.client import Endpoint
from tholos_mlx.bench.sides.server import ServerProcess
from tholos_mlx.timings import Timings


def line(queued: float) -> str:
    t = Timings(arrived=queued - 0.001, queued=queued)
    t.started = t.prompted = t.generating = queued + 0.002
    return f"12:00:00 INFO tholos.engine: m: 3 prompt tokens, finish stop; {t.line()}\n"


def test_new_timings_reads_each_line_once_and_waits_for_a_line_being_written(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess([], Endpoint("127.0.0.1", 1), log)
    assert server.new_timings() == []  # no log yet
    log.write_text("INFO starting\n" + line(10.0))
    (first,) = server.new_timings()
    assert first["http_ms"] is not None and round(first["http_ms"], 2) == 1.0
    assert server.new_timings() == []  # nothing new
    with log.open("a") as f:
        f.write(line(20.0) + line(30.0)[:25])  # the second line is still being written
    assert len(server.new_timings()) == 1
    with log.open("a") as f:
        f.write(line(30.0)[25:])
    assert len(server.new_timings()) == 1  # its rest completes it: read once, whole
    assert server.new_timings() == []


def test_a_speculating_server_s_draft_counts_are_read_with_its_timing_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess([], Endpoint("127.0.0.1", 1), log)
    log.write_text(line(10.0).rstrip("\n") + " drafted=48 accepted=31\n" + line(20.0))
    spec, plain = server.new_timings()
    assert spec["drafted"] == 48.0 and spec["accepted"] == 31.0
    assert "drafted" not in plain and plain["http_ms"] is not None
