"""What rank 0 sends the other ranks, what they do with it, and a broken group, with fake peers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tholos_mlx import timings
from tholos_mlx.errors import InvalidRequest, ServiceUnavailable
from tholos_mlx.events import Event
from tholos_mlx.ranks import AgreedSink, Job, Leader, Ranks, Watchdog, follow
from tholos_mlx.request import GenerationRequest, Message
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

REQUEST = GenerationRequest(messages=(Message("user", "hi"),))
ENTRY = ModelEntry("m", "fast", Path("/models/m"))


class Peers:
    """ranks.Ranks without a network: rank 0's sends are kept, a follower's jobs are scripted."""

    rank, size = 0, 2

    def __init__(self, jobs: tuple[Job, ...] = (), others_cancel: bool = False) -> None:
        self.sent: list[Job] = []
        self.jobs = list(jobs)
        self.others_cancel = others_cancel
        self.polls = 0
        self.done_calls = 0

    def send(self, job: Job) -> None:
        self.sent.append(job)

    def receive(self) -> Job:
        return self.jobs.pop(0)

    def any(self, flag: bool) -> bool:
        self.polls += 1
        return flag or self.others_cancel

    def least(self, n: int) -> int:
        return n

    def done(self) -> None:
        self.done_calls += 1

    def up(self) -> list[int]:
        return [0]  # the heartbeat has not heard rank 1 lately


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cancelled = False

    def put(self, item: Event) -> None:
        self.events.append(item)


class Slot:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.loaded_id: str | None = None
        self.last_id: str | None = None

    def switch(self, entry: ModelEntry) -> object:
        self.calls.append(("switch", entry.id))
        return entry

    def unload(self, deadline: float | None = None) -> None:
        self.calls.append(("unload", deadline))


def _times() -> Timings:
    return Timings(None, timings.now())


def test_rank_0_sends_each_request_with_a_seed_before_running_it_itself() -> None:
    peers, slot, ran = Peers(), Slot(), []

    def runner(s: Any, request: GenerationRequest, entry: Any, sink: Any, t: Timings) -> None:
        assert s is slot and peers.sent  # sent first, then run on the slot itself
        ran.append(request)

    leader = Leader(peers, slot, runner)  # type: ignore[arg-type]
    leader.run(leader, REQUEST, ENTRY, Sink(), _times())
    (job,) = peers.sent
    assert job.kind == "run" and job.entry == ENTRY
    assert job.request is not None and job.request.seed is not None  # so sampling agrees
    assert ran == [job.request] and peers.done_calls == 1


def test_a_cancel_on_any_rank_stops_every_rank_and_stays_stopped() -> None:
    peers = Peers(others_cancel=True)
    sink = AgreedSink(Sink(), peers)  # type: ignore[arg-type]
    assert sink.cancelled and sink.cancelled
    assert peers.polls == 1  # agreed once; every rank then knows without asking again


def test_a_peer_lost_mid_request_ends_it_with_a_503_and_breaks_the_group() -> None:
    peers, broken = Peers(), []

    def runner(*_: Any) -> None:
        raise RuntimeError("[ring] connection to a peer was lost")

    leader = Leader(peers, Slot(), runner)  # type: ignore[arg-type]
    leader.watch(lambda: broken.append(True))
    sink = Sink()
    with pytest.raises(ServiceUnavailable) as err:
        leader.run(leader, REQUEST, None, sink, _times())
    assert err.value.retry_after is not None
    assert broken == [True] and leader.broken
    assert isinstance(sink.events[0], ServiceUnavailable)  # the client hears it at once
    assert leader.health() == {"ranks": 2, "ranks_up": [0]}
    with pytest.raises(ServiceUnavailable):  # and the next request is refused without a try
        leader.run(leader, REQUEST, None, Sink(), _times())
    assert len(peers.sent) == 1


def test_a_refusal_is_the_same_on_every_rank_and_leaves_the_group_whole() -> None:
    def runner(*_: Any) -> None:
        raise InvalidRequest("bad schema")

    leader = Leader(Peers(), Slot(), runner)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        leader.run(leader, REQUEST, None, Sink(), _times())
    assert not leader.broken


def test_rank_0_loads_unloads_and_stops_every_rank() -> None:
    peers, slot = Peers(), Slot()
    leader = Leader(peers, slot, lambda *_: None)  # type: ignore[arg-type]
    leader.switch(ENTRY)
    leader.unload()
    leader.unload(time.monotonic() + 5)
    assert [j.kind for j in peers.sent] == ["load", "unload", "stop"]
    assert slot.calls[0] == ("switch", "m") and [c[0] for c in slot.calls[1:]] == ["unload"] * 2


def test_a_follower_does_what_rank_0_sends_until_stop() -> None:
    jobs = [
        Job("load", entry=ENTRY),
        Job("run", request=REQUEST, entry=None),
        Job("run", request=REQUEST, entry=None),
        Job("unload"),
        Job("stop", seconds=1.0),
    ]
    peers, slot, ran = Peers(tuple(jobs)), Slot(), []

    def runner(s: Any, request: Any, entry: Any, sink: Any, t: Any) -> None:
        ran.append(request)
        sink.put(object())  # nobody hears a follower
        if len(ran) == 1:
            raise InvalidRequest("rank 0 answers this refusal")

    follow(peers, slot, runner)  # type: ignore[arg-type]
    assert ran == [REQUEST, REQUEST]
    assert [c[0] for c in slot.calls] == ["switch", "unload", "unload"]
    assert peers.done_calls == len(jobs) and peers.jobs == []


def test_the_watchdog_trips_when_a_step_waits_too_long_but_not_between_jobs() -> None:
    tripped: list[bool] = []
    dog = Watchdog(lambda: tripped.append(True), timeout=0.2)
    time.sleep(0.4)
    assert tripped == []  # never armed: waiting for a job is fine
    with dog.paused():  # a model load
        dog.beat()
        time.sleep(0.4)
    assert tripped == []
    deadline = time.monotonic() + 3
    while not tripped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tripped == [True]


def test_health_names_only_the_ranks_the_heartbeat_hears() -> None:
    leader = Leader(Peers(), Slot(), lambda *_: None)  # type: ignore[arg-type]
    assert leader.health() == {"ranks": 2, "ranks_up": [0]}


class Beats:
    def __init__(self) -> None:
        self.stopped = False
        self.said: list[str] = []  # what rank 0 told the others, in order

    def wake(self) -> None:
        self.said.append("wake")

    def stop(self) -> None:
        self.stopped = True
        self.said.append("stop")


def test_a_stop_sent_to_the_other_ranks_silences_the_heartbeat_first() -> None:
    import mlx.core as mx

    ranks = Ranks(mx.distributed.init(), Watchdog(lambda: None))  # this process alone
    beats = Beats()
    ranks.heartbeat = beats  # type: ignore[assignment]
    ranks.send(Job("run", request=REQUEST))
    assert not beats.stopped
    ranks.send(Job("stop", seconds=1.0))  # the others exit now: their silence is no news
    assert beats.stopped
    assert beats.said == ["wake", "wake", "stop"]  # every job announced, the stop one too
