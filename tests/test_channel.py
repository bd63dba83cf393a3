"""Unit tests of tholos_mlx.channel.Channel: batching, timeout, close, cancel, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tholos_mlx.channel import Channel
from tholos_mlx.errors import ServerError
from tholos_mlx.events import Delta, Event, Finished, Started
from tholos_mlx.request import Usage


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body on a fresh loop, with a generous overall bound."""

    async def bounded() -> Any:
        return await asyncio.wait_for(test(), timeout=10)

    return asyncio.run(bounded())


def test_events_ready_together_come_as_one_batch_in_order() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        events: list[Event] = [
            Started("m", 3, 1),
            Delta("a"),
            Delta("b"),
            Finished("stop", Usage(3, 2, 1)),
        ]
        for ev in events:
            ch.put(ev)
        assert await ch.next_batch() == events
        assert await ch.next_batch(timeout=0.01) is None  # taken: nothing is left

    run(body)


def test_next_batch_returns_none_when_the_timeout_passes_first() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await ch.next_batch(timeout=0.05) is None
        assert loop.time() - t0 >= 0.04
        # A timed-out wait loses nothing: the next put is still delivered.
        ch.put(Delta("late"))
        assert await ch.next_batch(timeout=1) == [Delta("late")]

    run(body)


def test_a_put_after_a_timed_out_wait_wakes_the_next_one() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        assert await ch.next_batch(timeout=0.01) is None
        threading.Timer(0.05, ch.put, args=(Delta("x"),)).start()
        assert await ch.next_batch(timeout=5) == [Delta("x")]

    run(body)


def test_close_drains_what_is_left_then_answers_an_empty_list() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        ch.put(Delta("a"))
        ch.put(Delta("b"))
        ch.close()
        assert await ch.next_batch() == [Delta("a"), Delta("b")]
        assert await ch.next_batch() == []
        assert await ch.next_batch(timeout=0.01) == []  # closed is final, never a timeout

    run(body)


def test_close_from_another_thread_wakes_a_sleeping_reader() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        threading.Timer(0.05, ch.close).start()
        assert await ch.next_batch() == []

    run(body)


def test_puts_from_another_thread_arrive_whole_and_in_order() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        pieces = [f"piece{i} " for i in range(200)]

        def engine() -> None:
            ch.put(Started("m", 1, 0))
            for i, p in enumerate(pieces):
                ch.put(Delta(p))
                if i % 20 == 0:
                    time.sleep(0.002)
            ch.put(Finished("stop", Usage(1, len(pieces))))
            ch.close()

        thread = threading.Thread(target=engine)
        thread.start()
        got: list[Event] = []
        batches = 0
        while True:
            batch = await ch.next_batch(timeout=5)
            assert batch is not None, "the engine thread's events never came"
            if not batch:
                break
            batches += 1
            got.extend(batch)
        thread.join()
        assert got[0] == Started("m", 1, 0)
        assert [e.text for e in got[1:-1] if isinstance(e, Delta)] == pieces
        assert got[-1] == Finished("stop", Usage(1, len(pieces)))
        assert 1 <= batches <= len(got)

    run(body)


def test_many_threads_putting_at_once_lose_nothing() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())

        def worker(n: int) -> None:
            for i in range(100):
                ch.put(Delta(f"{n}:{i}"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        got: list[str] = []
        while len(got) < 400:
            batch = await ch.next_batch(timeout=5)
            assert batch, "events were lost"
            got.extend(e.text for e in batch if isinstance(e, Delta))
        for t in threads:
            t.join()
        assert sorted(got) == sorted(f"{n}:{i}" for n in range(4) for i in range(100))
        for n in range(4):  # each thread's own events keep their order
            assert [g for g in got if g.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(100)]

    run(body)


def test_an_exception_travels_as_a_value() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        err = ServerError("boom")
        ch.put(Delta("a"))
        ch.put(err)
        batch = await ch.next_batch()
        assert batch == [Delta("a"), err]
        assert batch is not None and batch[1] is err

    run(body)


def test_cancel_is_seen_by_the_engine_thread() -> None:
    async def body() -> None:
        ch = Channel(asyncio.get_running_loop())
        assert not ch.cancelled
        seen = threading.Event()

        def engine() -> None:
            while not ch.cancelled:
                time.sleep(0.001)
            seen.set()
            ch.close()

        thread = threading.Thread(target=engine)
        thread.start()
        await asyncio.sleep(0.02)
        ch.cancel()
        assert await ch.next_batch(timeout=5) == []
        thread.join()
        assert seen.is_set()

    run(body)
