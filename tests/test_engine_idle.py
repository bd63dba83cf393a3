"""The engine's idle unload with a stand-in model slot: when it fires, and what waits for it."""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from tholos_mlx.channel import Sink
from tholos_mlx.engine import Engine
from tholos_mlx.request import GenerationRequest, Message
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

WAIT_S = 10.0  # bound for what must happen; never a timing assert
IDLE_S = 0.05


class Slot:
    """The part of ModelSlot the engine's loop uses; switch and unload can be held."""

    def __init__(self) -> None:
        self.current: ModelEntry | None = None
        self.last: ModelEntry | None = None
        self.kv_bits = None
        self.entered: list[str] = []  # switches begun
        self.switched: list[str] = []  # switches done
        self.unloads = 0
        self.hold_switch: dict[str, threading.Event] = {}
        self.unloading = threading.Event()
        self.hold_unload: threading.Event | None = None
        self.deadlines: list[float | None] = []

    @property
    def loaded_id(self) -> str | None:
        return self.current.id if self.current else None

    @property
    def last_id(self) -> str | None:
        return self.loaded_id or (self.last.id if self.last else None)

    def switch(self, entry: ModelEntry) -> ModelEntry:
        self.entered.append(entry.id)
        hold = self.hold_switch.get(entry.id)
        if hold is not None:
            assert hold.wait(WAIT_S)
        self.current = self.last = entry
        self.switched.append(entry.id)
        return entry

    def unload(self, deadline: float | None = None) -> None:
        if self.current is None:
            return
        self.deadlines.append(deadline)
        self.unloading.set()
        if self.hold_unload is not None:
            assert self.hold_unload.wait(WAIT_S)
        self.current = None
        self.unloads += 1


def entry(name: str) -> ModelEntry:
    return ModelEntry(name, "fast", Path("/models") / name)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def no_answer(
    slot: Slot, request: GenerationRequest, entry: ModelEntry | None, out: Sink, times: Timings
) -> None:
    """The runner: these tests are about loading and unloading, not about answers."""


class NoCounter:
    async def count(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        raise AssertionError("these tests count no tokens")


def started(slot: Slot, idle: float = IDLE_S) -> Engine[Slot]:
    engine = Engine(slot, no_answer, NoCounter(), idle_unload=idle)
    engine.start()
    return engine


def in_thread(fn: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_an_idle_model_is_unloaded_and_remembered_as_the_last() -> None:
    slot = Slot()
    engine = started(slot)
    engine.load(entry("a"))
    wait_until(lambda: slot.unloads == 1, "the idle unload")
    assert (engine.loaded, engine.last_loaded) == (None, "a")
    engine.stop()


def test_a_queue_of_waiting_work_never_lets_the_model_go() -> None:
    slot = Slot()
    engine = started(slot)
    engine.load(entry("a"))
    wait_until(lambda: slot.unloads == 1, "the first idle unload")
    release = threading.Event()
    slot.hold_switch["slow"] = release
    threads = [in_thread(lambda: engine.load(entry("slow")))]
    wait_until(lambda: "slow" in slot.entered, "the slow job to run")
    threads += [in_thread(partial(engine.load, entry(name))) for name in ("b", "c")]  # queued
    time.sleep(IDLE_S * 10)  # ten idle periods with work running or queued
    assert slot.unloads == 1
    release.set()
    for t in threads:
        t.join(WAIT_S)
    assert slot.switched[:2] == ["a", "slow"] and sorted(slot.switched[2:]) == ["b", "c"]
    wait_until(lambda: slot.unloads == 2, "the idle unload once the queue is empty")
    engine.stop()


def test_work_arriving_during_the_unload_waits_for_it_then_runs() -> None:
    slot = Slot()
    slot.hold_unload = threading.Event()
    engine = started(slot)
    engine.load(entry("a"))
    assert slot.unloading.wait(WAIT_S)
    done = threading.Event()

    def reload() -> None:
        engine.load(entry("a"))
        done.set()

    t = in_thread(reload)
    assert not done.wait(IDLE_S * 4)  # its turn comes after the unload
    slot.hold_unload.set()
    t.join(WAIT_S)
    assert done.is_set()
    assert slot.switched == ["a", "a"] and slot.unloads == 1
    engine.stop()


def test_idle_unload_zero_never_unloads_and_shutdown_unloads_with_a_deadline() -> None:
    slot = Slot()
    engine = started(slot, idle=0.0)
    engine.load(entry("a"))
    time.sleep(IDLE_S * 10)
    assert slot.unloads == 0
    before = time.monotonic()
    engine.stop(timeout=5.0)
    assert slot.unloads == 1  # at shutdown: the prompt cache is saved within the deadline
    (deadline,) = slot.deadlines
    assert deadline is not None and before < deadline <= before + 5.0


def test_a_request_ending_after_its_event_loop_closed_does_not_kill_the_engine_thread() -> None:
    slot = Slot()
    engine = started(slot, idle=0.0)
    engine.load(entry("a"))
    release = threading.Event()
    slot.hold_switch["slow"] = release
    busy = in_thread(lambda: engine.load(entry("slow")))
    wait_until(lambda: "slow" in slot.entered, "the engine to be busy")
    loop = asyncio.new_event_loop()
    request = GenerationRequest(messages=(Message("user", "hi"),))

    async def submit() -> None:
        engine.submit(request, None, lambda: None)  # its turn comes after the loop is gone

    loop.run_until_complete(submit())
    loop.close()  # as at shutdown: Sanic's loop closes before the engine is done
    release.set()
    busy.join(WAIT_S)
    after = in_thread(partial(engine.load, entry("b")))
    after.join(WAIT_S)
    assert not after.is_alive(), "the engine thread died with the job that lost its loop"
    assert slot.switched[-1] == "b"
    engine.stop(timeout=5.0)
    assert slot.unloads == 1  # and still saved and unloaded at shutdown


def test_an_idle_unload_longer_than_any_timeout_waits_forever_instead_of_killing_the_thread() -> (
    None
):
    slot = Slot()
    engine = started(slot, idle=1e12)  # past threading.TIMEOUT_MAX: queue.get would overflow
    engine.load(entry("a"))
    loading = in_thread(lambda: engine.load(entry("b")))  # the thread is alive, still takes work
    loading.join(WAIT_S)
    assert not loading.is_alive(), "the engine thread died on the huge timeout"
    assert (engine.loaded, slot.unloads) == ("b", 0)
    engine.stop(timeout=5.0)


def test_a_failing_idle_unload_leaves_the_engine_thread_serving() -> None:
    slot = Slot()
    calls = []

    def broken(deadline: float | None = None) -> None:
        calls.append(deadline)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        Slot.unload(slot, deadline)

    slot.unload = broken  # type: ignore[method-assign]
    engine = started(slot)
    engine.load(entry("a"))
    wait_until(lambda: len(calls) >= 1, "the failed unload")
    loading = in_thread(lambda: engine.load(entry("b")))  # served after the failure
    loading.join(WAIT_S)
    assert not loading.is_alive(), "the engine thread died with the failed unload"
    assert "b" in slot.switched
    engine.stop(timeout=5.0)
