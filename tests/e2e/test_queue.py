"""End to end: one engine, one FIFO queue, 429 and 503 with Retry-After, and cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests import server as srv

# A prompt that keeps the model talking, and a short question sharing its system prompt.
SYSTEM = {"role": "system", "content": "You are a storyteller."}
LONG = [SYSTEM, {"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
SHORT = [SYSTEM, {"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def tight(demo_home: Path) -> Iterator[srv.Server]:
    """A server where one request may wait, for at most 2 seconds."""
    with srv.running(demo_home, "--model", "fast", "--max-queue", "1", "--queue-timeout", "2") as s:
        yield s


def queue_length(server: srv.Server) -> int:
    with server.client() as c:
        return int(c.get("/health").json()["queue"])


def wait_until(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class Streamer(threading.Thread):
    """Streams a long answer in the background until told to hang up."""

    def __init__(
        self, server: srv.Server, messages: list[dict[str, str]], max_tokens: int = 200
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.messages, self.max_tokens = server, messages, max_tokens
        self.hang_up = threading.Event()
        self.first_text = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:
        body = {
            "messages": self.messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        try:
            with (
                self.server.client() as c,
                c.stream("POST", "/v1/chat/completions", json=body) as r,
            ):
                for line in r.iter_lines():
                    if '"content":"' in line and '"role"' not in line:
                        self.first_text.set()
                    if self.hang_up.is_set():
                        break  # closing the connection is the client disconnecting
        finally:
            self.first_text.set()
            self.ended.set()


class Asker(threading.Thread):
    """Sends one non-streamed request in the background and keeps the response."""

    def __init__(
        self, server: srv.Server, messages: list[dict[str, str]], max_tokens: int = 1
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.messages, self.max_tokens = server, messages, max_tokens
        self.response: httpx.Response | None = None
        self.done_at = 0.0

    def run(self) -> None:
        body = {"messages": self.messages, "temperature": 0, "max_tokens": self.max_tokens}
        with self.server.client() as c:
            self.response = c.post("/v1/chat/completions", json=body)
        self.done_at = time.monotonic()


def test_full_queue_answers_429_and_a_long_wait_answers_503_both_with_retry_after(
    tight: srv.Server,
) -> None:
    running = Streamer(tight, LONG)
    running.start()
    assert running.first_text.wait(120)
    waiting = Asker(tight, SHORT)
    waiting.start()
    wait_until(lambda: queue_length(tight) == 1)

    sdk = openai.OpenAI(base_url=tight.v1, api_key=tight.key, max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as busy:
        sdk.chat.completions.create(model="", messages=SHORT, max_tokens=1)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0  # refused at once, not after a wait
    assert busy.value.status_code == 429
    assert busy.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert 1 <= int(busy.value.response.headers["retry-after"]) <= 60

    waiting.join(30)
    assert waiting.response is not None
    assert waiting.response.status_code == 503
    assert waiting.response.json()["error"]["type"] == "service_unavailable"
    assert 1 <= int(waiting.response.headers["retry-after"]) <= 60

    running.hang_up.set()
    running.join(30)
    wait_until(lambda: queue_length(tight) == 0)


def test_a_disconnected_stream_frees_the_engine_for_the_next_request_within_two_seconds(
    tight: srv.Server,
) -> None:
    running = Streamer(tight, LONG)
    running.start()
    assert running.first_text.wait(120)
    body = {"messages": SHORT, "temperature": 0, "max_tokens": 1, "stream": True}
    got_turn = threading.Event()

    def next_request() -> None:
        with tight.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
            got_turn.set()  # headers arrive only once the request holds the engine
            r.read()

    follower = threading.Thread(target=next_request, daemon=True)
    follower.start()
    wait_until(lambda: queue_length(tight) == 1)
    assert not got_turn.is_set()
    hung_up_at = time.monotonic()
    running.hang_up.set()
    assert got_turn.wait(10)
    assert time.monotonic() - hung_up_at < 2.0
    follower.join(60)
    wait_until(lambda: queue_length(tight) == 0)


def test_a_waiting_client_that_leaves_gives_up_its_place(tight: srv.Server) -> None:
    running = Streamer(tight, LONG)
    running.start()
    assert running.first_text.wait(120)
    body = {"messages": SHORT, "temperature": 0, "max_tokens": 1}
    with pytest.raises(httpx.ReadTimeout):
        with tight.client(timeout=0.5) as c:
            c.post("/v1/chat/completions", json=body)
    wait_until(lambda: queue_length(tight) == 0, timeout=5)
    running.hang_up.set()
    running.join(30)


def test_requests_run_one_at_a_time_in_arrival_order(demo_home: Path) -> None:
    with srv.running(demo_home, "--model", "fast", "--max-queue", "8") as s:
        running = Streamer(s, LONG, max_tokens=400)
        running.start()
        assert running.first_text.wait(120)
        askers = []
        for n in range(3):
            a = Asker(s, [SYSTEM, {"role": "user", "content": f"Say the number {n}."}])
            a.start()
            wait_until(lambda n=n: queue_length(s) == n + 1)  # queued strictly after the one before
            askers.append(a)
        started = time.monotonic()
        with s.client() as c:
            health = c.get("/health")
        assert time.monotonic() - started < 1.0  # /health does not wait behind generation
        assert health.json()["queue"] == 3
        running.hang_up.set()
        for a in askers:
            a.join(120)
            assert a.response is not None and a.response.status_code == 200
        finish = [a.done_at for a in askers]
        assert finish == sorted(finish)
        wait_until(lambda: queue_length(s) == 0)
