"""The ranks' heartbeat over real sockets on 127.0.0.1: silence is death, a slow step is not."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tholos_mlx.heartbeat import RANK_BYTES, Heartbeat, leader_host

BEAT, DEAD = 0.05, 0.4


class Deaths:
    def __init__(self) -> None:
        self.ranks: list[int] = []
        self.event = threading.Event()

    def __call__(self, rank: int) -> None:
        self.ranks.append(rank)
        self.event.set()


def _pair(
    leader_dead: Deaths, follower_dead: Deaths, dead_after: float = DEAD
) -> tuple[Heartbeat, Heartbeat]:
    leader = Heartbeat(0, 2, leader_dead, beat=BEAT, dead_after=dead_after)
    follower = Heartbeat(1, 2, follower_dead, beat=BEAT, dead_after=dead_after)
    shared = leader.listen("127.0.0.1")
    joined = threading.Thread(target=leader.accept, kwargs={"timeout": 5})
    joined.start()
    follower.connect(shared)
    joined.join(5)
    return leader, follower


def _silent_peer(shared: bytes, rank: int = 1, token: bytes | None = None) -> socket.socket:
    """A rank that joins and then says nothing more: a frozen process (SIGSTOP)."""
    where = json.loads(shared)
    conn = socket.create_connection((where["host"], where["port"]))
    conn.sendall((token or bytes.fromhex(where["token"])) + rank.to_bytes(RANK_BYTES, "big"))
    return conn


def test_ranks_that_keep_beating_stay_up_however_long_a_step_takes() -> None:
    leader_dead, follower_dead = Deaths(), Deaths()
    # A dead time of 40 beats: a loaded CPU may hold a beat back, not that long.
    leader, follower = _pair(leader_dead, follower_dead, dead_after=BEAT * 40)
    # Nothing here touches the beats: a step longer than the dead time, on both ranks.
    time.sleep(BEAT * 60)
    assert leader_dead.ranks == [] and follower_dead.ranks == []
    assert leader.up() == [0, 1] and follower.up() == [0, 1]
    leader.stop()
    follower.stop()


def test_a_rank_that_joins_then_falls_silent_is_declared_dead_once() -> None:
    dead = Deaths()
    leader = Heartbeat(0, 2, dead, beat=BEAT, dead_after=DEAD)
    shared = leader.listen("127.0.0.1")
    joined = threading.Thread(target=leader.accept, kwargs={"timeout": 5})
    started = time.monotonic()  # before it last heard the rank (its join)
    joined.start()
    frozen = _silent_peer(shared)
    joined.join(5)
    assert dead.event.wait(DEAD * 10)
    assert time.monotonic() - started >= DEAD  # not before its silence is long enough
    assert leader.up() == [0]
    time.sleep(DEAD)
    assert dead.ranks == [1]
    frozen.close()


def test_a_rank_whose_connection_closes_is_declared_dead_at_once() -> None:
    dead = Deaths()
    leader = Heartbeat(0, 2, dead, beat=BEAT, dead_after=60)
    shared = leader.listen("127.0.0.1")
    joined = threading.Thread(target=leader.accept, kwargs={"timeout": 5})
    joined.start()
    killed = _silent_peer(shared)
    joined.join(5)
    killed.close()  # what the kernel does for a process that exits
    assert dead.event.wait(5) and dead.ranks == [1]


def test_a_rank_that_leaves_is_heard_at_once() -> None:
    leader_dead = Deaths()
    leader = Heartbeat(0, 2, leader_dead, beat=BEAT, dead_after=60)
    follower = Heartbeat(1, 2, Deaths(), beat=BEAT, dead_after=60)
    shared = leader.listen("127.0.0.1")
    joined = threading.Thread(target=leader.accept, kwargs={"timeout": 5})
    joined.start()
    follower.connect(shared)
    joined.join(5)
    follower.leave()  # its step watchdog tripped: rank 0 must answer its clients now
    assert leader_dead.event.wait(5) and leader_dead.ranks == [1]


def test_a_follower_whose_rank_0_falls_silent_declares_it_dead() -> None:
    leader_dead, follower_dead = Deaths(), Deaths()
    leader, follower = _pair(leader_dead, follower_dead)
    leader.stop()  # rank 0 beats no more, as if frozen; it no longer judges either
    assert follower_dead.event.wait(DEAD * 10)
    assert follower_dead.ranks == [0] and leader_dead.ranks == []


def test_after_a_stop_a_peer_going_away_is_no_news() -> None:
    leader_dead, follower_dead = Deaths(), Deaths()
    leader, follower = _pair(leader_dead, follower_dead)
    leader.stop()
    follower.stop()
    time.sleep(DEAD * 3)
    assert leader_dead.ranks == [] and follower_dead.ranks == []


def test_a_stranger_without_the_groups_token_does_not_count_as_a_rank() -> None:
    leader = Heartbeat(0, 2, Deaths(), beat=BEAT, dead_after=DEAD)
    shared = leader.listen("127.0.0.1")
    stranger = _silent_peer(shared, token=b"\0" * 16)  # waits in the backlog to be heard
    with pytest.raises(TimeoutError, match="1 of 2 ranks"):
        leader.accept(timeout=1)  # the stranger was turned away: still nobody has joined
    stranger.close()


def test_rank_0s_address_comes_from_what_mlx_launch_set(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps([["10.0.0.1:5000"], ["10.0.0.2:5001"]]))
    assert leader_host({"MLX_HOSTFILE": str(ring)}) == "10.0.0.1"
    assert leader_host({"MLX_JACCL_COORDINATOR": "10.0.0.7:32323"}) == "10.0.0.7"
    assert leader_host({}) is None
    assert leader_host({"MLX_HOSTFILE": str(tmp_path / "missing.json")}) is None


def test_a_follower_sleeps_until_rank_0_announces_each_job_and_takes_each_once() -> None:
    leader, follower = _pair(Deaths(), Deaths(), dead_after=60)
    woken: list[float] = []

    def take(n: int) -> None:
        for _ in range(n):
            follower.wait_wake()
            woken.append(time.monotonic())

    waiter = threading.Thread(target=take, args=(3,), daemon=True)
    waiter.start()
    time.sleep(BEAT * 6)  # beats go on meanwhile: they are no job
    assert woken == [] and waiter.is_alive()
    leader.wake()
    leader.wake()  # two jobs in a row, before the follower took up the first
    deadline = time.monotonic() + 5
    while len(woken) < 2:
        assert time.monotonic() < deadline, "the announced jobs never woke the follower"
        time.sleep(0.01)
    time.sleep(BEAT * 6)
    assert len(woken) == 2 and waiter.is_alive()  # the third job has not been announced
    leader.wake()
    waiter.join(5)
    assert len(woken) == 3 and not waiter.is_alive()
    leader.stop()
    follower.stop()
