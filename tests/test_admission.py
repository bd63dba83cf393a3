"""Unit tests of tholos_mlx.admission.Gate: order, cap, deadline, cancel, close, Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tholos_mlx.admission import Gate, Turn
from tholos_mlx.errors import RateLimited, ServiceUnavailable


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body on a fresh loop, with a generous overall bound."""

    async def bounded() -> Any:
        return await asyncio.wait_for(test(), timeout=10)

    return asyncio.run(bounded())


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def waiter(gate: Gate, name: str, log: list[str], hold: asyncio.Event | None = None) -> None:
    """Wait for a turn, note it, hold it until `hold` is set (or not at all), release it."""
    turn = await gate.acquire()
    log.append(name)
    try:
        if hold is not None:
            await hold.wait()
    finally:
        turn.release()


def test_an_idle_gate_gives_the_turn_at_once_and_takes_it_back() -> None:
    async def body() -> None:
        gate = Gate(max_queue=2, queue_timeout=5)
        assert not gate.busy and gate.waiting == 0
        turn = await gate.acquire()
        assert isinstance(turn, Turn)
        assert gate.busy and gate.waiting == 0
        turn.release()
        assert not gate.busy
        again = await gate.acquire()
        again.release()
        assert not gate.busy and gate.waiting == 0

    run(body)


def test_waiters_get_the_turn_in_arrival_order() -> None:
    async def body() -> None:
        gate = Gate(max_queue=10, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(waiter(gate, str(i), log)))
            await settle()
            assert gate.waiting == i + 1
        holder.release()
        await asyncio.gather(*tasks)
        assert log == [str(i) for i in range(6)]
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_a_turn_released_twice_hands_over_only_once() -> None:
    async def body() -> None:
        gate = Gate(max_queue=10, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        hold = asyncio.Event()
        a = asyncio.create_task(waiter(gate, "a", log, hold))
        b = asyncio.create_task(waiter(gate, "b", log, hold))
        await settle()
        holder.release()
        holder.release()
        await settle()
        assert log == ["a"]  # b still waits: one release, one hand-over
        assert gate.waiting == 1
        hold.set()
        await asyncio.gather(a, b)
        assert log == ["a", "b"]
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_a_full_line_gets_429_at_once_with_retry_after() -> None:
    async def body() -> None:
        gate = Gate(max_queue=2, queue_timeout=60)
        holder = await gate.acquire()
        log: list[str] = []
        tasks = [asyncio.create_task(waiter(gate, n, log)) for n in "ab"]
        await settle()
        assert gate.waiting == 2
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RateLimited) as caught:
            await gate.acquire()
        assert loop.time() - t0 < 1  # at once, not after the 60 s wait
        err = caught.value
        assert err.status == 429 and err.type == "rate_limit_error"
        assert isinstance(err.retry_after, int) and 1 <= err.retry_after <= 60
        assert "busy" in err.message
        assert gate.waiting == 2  # the refused one never joined the line
        holder.release()
        await asyncio.gather(*tasks)
        assert log == ["a", "b"]
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_max_queue_zero_refuses_anyone_while_the_engine_is_busy() -> None:
    async def body() -> None:
        gate = Gate(max_queue=0, queue_timeout=60)
        holder = await gate.acquire()
        with pytest.raises(RateLimited):
            await gate.acquire()
        holder.release()
        (await gate.acquire()).release()
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_a_waiter_past_the_deadline_gets_503_with_retry_after() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=0.05)
        holder = await gate.acquire()
        with pytest.raises(ServiceUnavailable) as caught:
            await gate.acquire()
        err = caught.value
        assert err.status == 503 and err.type == "service_unavailable"
        assert isinstance(err.retry_after, int) and 1 <= err.retry_after <= 60
        assert gate.waiting == 0
        assert gate.busy  # the holder still has it
        holder.release()
        assert not gate.busy

    run(body)


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        a = asyncio.create_task(waiter(gate, "a", log))
        b = asyncio.create_task(waiter(gate, "b", log))
        c = asyncio.create_task(waiter(gate, "c", log))
        await settle()
        assert gate.waiting == 3
        b.cancel()
        await settle()
        assert b.cancelled()
        assert gate.waiting == 2
        holder.release()
        await asyncio.gather(a, c)
        assert log == ["a", "c"]
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_a_turn_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        a = asyncio.create_task(waiter(gate, "a", log))
        b = asyncio.create_task(waiter(gate, "b", log))
        await settle()
        holder.release()  # hands the turn to a ...
        a.cancel()  # ... whose client leaves before a's task could run
        await asyncio.gather(a, b, return_exceptions=True)
        assert a.cancelled()  # the cancel is honoured, not swallowed
        assert log == ["b"]  # and the turn a never used went on to b
        assert gate.waiting == 0 and not gate.busy
        (await gate.acquire()).release()  # nothing leaked: the gate is free

    run(body)


def test_a_turn_handed_to_the_last_waiter_as_it_is_cancelled_frees_the_gate() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        a = asyncio.create_task(waiter(gate, "a", log))
        await settle()
        holder.release()
        a.cancel()
        await asyncio.gather(a, return_exceptions=True)
        assert log == []
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_close_fails_every_waiter_with_503_and_refuses_new_ones() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=5)
        holder = await gate.acquire()
        log: list[str] = []
        tasks = [asyncio.create_task(waiter(gate, n, log)) for n in "abc"]
        await settle()
        gate.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            assert isinstance(r, ServiceUnavailable)
            assert r.status == 503 and r.retry_after is not None and r.retry_after >= 1
        assert log == [] and gate.waiting == 0
        with pytest.raises(ServiceUnavailable):
            await gate.acquire()
        holder.release()  # the one that ran finishes normally
        assert not gate.busy
        with pytest.raises(ServiceUnavailable):
            await gate.acquire()
        assert gate.waiting == 0

    run(body)


def test_waiting_returns_to_zero_after_any_mix() -> None:
    async def body() -> None:
        gate = Gate(max_queue=4, queue_timeout=0.2)
        holder = await gate.acquire()
        log: list[str] = []
        timed_out = [asyncio.create_task(waiter(gate, n, log)) for n in ("t1", "t2")]
        cancelled = asyncio.create_task(waiter(gate, "c", log))
        late = asyncio.create_task(waiter(gate, "t3", log))
        await settle()
        assert gate.waiting == 4
        with pytest.raises(RateLimited):
            await gate.acquire()
        cancelled.cancel()
        results = await asyncio.gather(*timed_out, late, cancelled, return_exceptions=True)
        assert [type(r) for r in results[:3]] == [ServiceUnavailable] * 3
        assert isinstance(results[3], asyncio.CancelledError)
        assert gate.waiting == 0 and gate.busy
        # Now some that succeed, one of them cancelled while holding the turn.
        hold = asyncio.Event()
        ok = [asyncio.create_task(waiter(gate, f"ok{i}", log, hold)) for i in range(3)]
        await settle()
        holder.release()
        await settle()
        assert log == ["ok0"]
        ok[0].cancel()  # its finally releases the turn
        hold.set()
        await asyncio.gather(*ok, return_exceptions=True)
        assert log == ["ok0", "ok1", "ok2"]
        assert gate.waiting == 0 and not gate.busy

    run(body)


def test_retry_after_grows_with_the_work_ahead_within_1_to_60() -> None:
    async def body() -> None:
        gate = Gate(max_queue=100, queue_timeout=60)
        assert 1 <= gate.retry_after() <= 60
        holder = await gate.acquire()
        hints = [gate.retry_after()]
        log: list[str] = []
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(waiter(gate, str(i), log)))
            await settle()
            hints.append(gate.retry_after())
        assert hints == sorted(hints) and hints[0] < hints[-1]
        for _ in range(20):
            tasks.append(asyncio.create_task(waiter(gate, "more", log)))
        await settle()
        assert gate.retry_after() == 60  # capped
        holder.release()
        await asyncio.gather(*tasks)
        # Turns that took no time bring the estimate down, but never below 1 s.
        assert gate.retry_after() == 1
        assert gate.waiting == 0

    run(body)


def test_retry_after_follows_how_long_turns_take() -> None:
    async def body() -> None:
        gate = Gate(max_queue=10, queue_timeout=60)
        turn = await gate.acquire()
        await asyncio.sleep(0.25)
        turn.release()
        holder = await gate.acquire()
        one_ahead = gate.retry_after()
        log: list[str] = []
        tasks = [asyncio.create_task(waiter(gate, str(i), log)) for i in range(4)]
        await settle()
        five_ahead = gate.retry_after()
        assert one_ahead == 1  # ceil(~0.25 s)
        assert 2 <= five_ahead <= 3  # ceil(5 x ~0.25 s), generous for a slow machine
        holder.release()
        await asyncio.gather(*tasks)
        assert gate.waiting == 0 and not gate.busy

    run(body)
