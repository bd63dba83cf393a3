"""A fake engine (the real Engine with a scripted runner), and a live server around it.

FakeEngine is tholos_mlx.engine.Engine itself, its thread, queue, error handling and
shutdown, with a runner that plays a Script instead of running a model: Started, Deltas,
Finished (or an exception). What each job got is recorded in a Job.

LiveServer runs create_app(...) with a FakeEngine on a real 127.0.0.1 port, in a
background thread with its own event loop, so tests can talk to it with httpx
concurrently (sanic-testing's client is sequential).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import httpx

from tholos_mlx import timings
from tholos_mlx.admission import Gate
from tholos_mlx.app import create_app
from tholos_mlx.channel import Sink
from tholos_mlx.config import Settings
from tholos_mlx.engine import Engine
from tholos_mlx.errors import NoModelLoaded
from tholos_mlx.events import Delta, Event, Finished, FinishReason, Started
from tholos_mlx.home import KeyStore, ensure_key
from tholos_mlx.request import GenerationRequest, Usage
from tholos_mlx.tiers import ModelEntry, TierTable
from tholos_mlx.timings import Timings

WAIT_S = 10.0  # generous bound for anything a test waits on; never a timing assert


@dataclass
class Script:
    """What the fake does with one request."""

    pieces: tuple[str, ...] = ("Hello", ", ", "world", "!")
    delay: float = 0.0  # seconds before each piece
    finish_reason: FinishReason = "stop"
    events: tuple[Event, ...] | None = None  # put these instead of a Delta per piece
    prompt_tokens: int = 7
    cached_tokens: int = 0
    error_before_start: BaseException | None = None  # put instead of Started
    error_after: int | None = None  # put `error` after this many pieces
    error: BaseException | None = None
    hold: threading.Event | None = None  # wait for it (while honouring cancel) before each piece

    @property
    def text(self) -> str:
        """The whole answer this script produces."""
        return "".join(self.pieces)


@dataclass
class Job:
    """What one submit() received and how it ended."""

    request: GenerationRequest
    entry: ModelEntry | None
    times: Timings  # the stamps the engine took for it (http, queue)
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    pieces_sent: int = 0
    cancelled: bool = False  # saw channel.cancelled while running
    dropped: bool = False  # cancelled before it started: nothing was generated


class FakeSlot:
    """The model slot as the engine sees it: which "model" is in memory, switch and unload."""

    def __init__(self, loaded: str | None) -> None:
        self.loaded_id = loaded
        self.last_id = loaded  # the model in memory, else the one unload() freed

    def switch(self, entry: ModelEntry) -> str:
        """ "Load" the named model."""
        self.loaded_id = self.last_id = entry.id
        return entry.id

    def unload(self, deadline: float | None = None) -> None:
        """What idle unload does: nothing in memory, the last model remembered."""
        self.loaded_id = None


class WordCounter:
    """A stand-in token count (words of every message, 10 per tool offered), on the loop.

    Like the real counter it never queues a job, and with no model loaded, named or loaded
    before (idle unload) it is 503."""

    def __init__(self, slot: FakeSlot) -> None:
        self._slot = slot
        self.counted: list[tuple[GenerationRequest, ModelEntry | None]] = []

    async def count(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        """The request's "prompt length"."""
        if entry is None and self._slot.last_id is None:
            raise NoModelLoaded()
        self.counted.append((request, entry))
        tools = request.tools if request.tool_choice.mode != "none" else ()
        return sum(len(m.content.split()) for m in request.messages) + 10 * len(tools)


class FakeEngine(Engine[FakeSlot]):
    """The real Engine (its thread, queue, errors and shutdown) with a scripted runner.

    Tests script what each job does and read what it got; the thread starts at once."""

    def __init__(self, script: Script | None = None, loaded: str | None = "alpha") -> None:
        self.script = script or Script()
        self.scripts: list[Script] = []  # consumed one per job, before falling back to .script
        self.jobs: list[Job] = []  # in the order the engine thread ran them
        self.slot = FakeSlot(loaded)
        self.words = WordCounter(self.slot)
        self._lock = threading.Lock()
        super().__init__(self.slot, self._run, self.words)
        self.start()

    @property
    def counted(self) -> list[tuple[GenerationRequest, ModelEntry | None]]:
        """Every count_tokens call, in order."""
        return self.words.counted

    def unload(self) -> None:
        """What idle unload does: nothing in memory, the last model remembered."""
        self.slot.unload()

    @property
    def requests(self) -> list[GenerationRequest]:
        """Every request the engine thread received, in order."""
        return [j.request for j in self.jobs]

    @property
    def entries(self) -> list[ModelEntry | None]:
        """The model entry each request came with (None: use the loaded one)."""
        return [j.entry for j in self.jobs]

    def stop(self, timeout: float = WAIT_S) -> None:
        """End the engine thread."""
        super().stop(timeout)

    def wait_jobs(self, n: int) -> list[Job]:
        """Block until the engine thread has received n jobs."""
        deadline = time.monotonic() + WAIT_S
        while len(self.jobs) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake engine got {len(self.jobs)} jobs, not {n}")
            time.sleep(0.005)
        return self.jobs[:n]

    def _run(
        self,
        slot: FakeSlot,
        request: GenerationRequest,
        entry: ModelEntry | None,
        channel: Sink,
        times: Timings,
    ) -> None:
        """The runner: what answering.answer does, as the next script says."""
        script = self.scripts.pop(0) if self.scripts else self.script
        record = Job(request, entry, times)
        with self._lock:
            self.jobs.append(record)
        try:
            self._play(script, slot, record, channel)
        finally:
            record.done.set()

    def _play(self, script: Script, slot: FakeSlot, record: Job, channel: Sink) -> None:
        if channel.cancelled:  # like answering: a request dropped before its turn does nothing
            record.dropped = True
            return
        if script.error_before_start is not None:
            raise script.error_before_start
        if record.entry is not None:
            slot.switch(record.entry)
        elif slot.loaded_id is None:
            if slot.last_id is None:
                raise AssertionError("the app submitted a request with no model loaded or named")
            slot.loaded_id = slot.last_id  # reload the model idle unload freed, as answering does
        assert slot.loaded_id is not None
        record.times.started = timings.now()
        channel.put(Started(slot.loaded_id, script.prompt_tokens, script.cached_tokens))
        record.started.set()
        events = script.events if script.events is not None else [Delta(p) for p in script.pieces]
        for i, event in enumerate(events):
            if script.error_after is not None and i == script.error_after:
                assert script.error is not None
                raise script.error
            if not self._pause(script, channel):
                record.cancelled = True
                return
            channel.put(event)
            record.pieces_sent += 1
        if channel.cancelled:
            record.cancelled = True
            return
        usage = Usage(script.prompt_tokens, len(events), script.cached_tokens)
        channel.put(Finished(script.finish_reason, usage))

    @staticmethod
    def _pause(script: Script, channel: Sink) -> bool:
        """Wait before a piece as scripted; False if the request was cancelled meanwhile."""
        if script.delay:
            deadline = time.monotonic() + script.delay
            while (left := deadline - time.monotonic()) > 0:
                if channel.cancelled:
                    return False
                time.sleep(min(left, 0.01))
        if script.hold is not None:
            while not script.hold.wait(0.01):
                if channel.cancelled:
                    return False
        return not channel.cancelled


# -- a home with models and a tier table --

TIERS_TOML = """\
[models.alpha]
path = "models/alpha"
tier = "fast"

[models.beta]
path = "models/beta"
tier = "fast"

[models.gamma]
path = "models/gamma"
tier = "big"
"""


def make_home(home: Path) -> Path:
    """A THOLOS_HOME with readable model folders alpha, beta (tier fast), gamma (tier big)."""
    for model_id in ("alpha", "beta", "gamma"):
        folder = home / "models" / model_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
    (home / "tiers.toml").write_text(TIERS_TOML, encoding="utf-8")
    return home


# -- the app on a real port --


class LiveServer:
    """create_app(...) with a FakeEngine, served on 127.0.0.1 from a background thread."""

    def __init__(
        self,
        home: Path,
        engine: FakeEngine | None = None,
        *,
        max_queue: int = 8,
        queue_timeout: float = 60.0,
        keepalive_s: float = 10.0,
        **settings: Any,
    ) -> None:
        self.home = home
        self.engine = engine or FakeEngine()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.settings = replace(
            Settings(home=home, port=self.port),
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            **settings,
        )
        self.gate = Gate(max_queue=max_queue, queue_timeout=queue_timeout)
        self.tiers = TierTable(home)
        self.keys = KeyStore(home)
        self.key = ensure_key(home)
        self.app = create_app(
            self.settings, self.engine, self.gate, self.tiers, self.keys, keepalive_s=keepalive_s
        )
        # Sanic's TouchUp recompiles its HTTP class from source at each app's startup (0.15 s,
        # and a second app in one process fails to rebuild it): an optimisation tests can skip.
        self.app.config.TOUCHUP = False
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-server", daemon=True)

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header with the current key."""
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server that sends the key."""
        headers = {**self.auth, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", WAIT_S)
        return httpx.Client(base_url=self.url, headers=headers, verify=False, **kwargs)

    def start(self) -> None:
        """Serve until stop()."""
        self._thread.start()
        if not self._ready.wait(WAIT_S):
            raise AssertionError("the server did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop serving and end the fake engine's thread."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_S)
        self.engine.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await self.app.create_server(
                sock=self._sock, return_asyncio_server=True, access_log=False
            )
            assert server is not None
            await server.startup()
            await server.start_serving()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await server.wait_closed()


@contextmanager
def live_server(
    home: Path, engine: FakeEngine | None = None, **kwargs: Any
) -> Iterator[LiveServer]:
    """A LiveServer on a home with models, stopped afterwards."""
    server = LiveServer(make_home(home), engine, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll until predicate() holds (generous bound)."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def queue_len(server: LiveServer) -> int:
    """The queue length /health reports."""
    with server.client() as c:
        return int(c.get("/health").json()["queue"])


Send = Callable[[LiveServer, Any], httpx.Response]


@contextmanager
def engine_held(
    home: Path, send: Send, bodies: Sequence[Any], **server_kwargs: Any
) -> Iterator[LiveServer]:
    """A live server whose engine holds the first of `bodies` while the others wait in line,
    each seen waiting before the next is sent. On leaving, the engine is let go, every one of
    them must have been answered 200, and the queue must empty."""
    hold = threading.Event()
    with (
        live_server(home, FakeEngine(Script(hold=hold)), **server_kwargs) as s,
        ThreadPoolExecutor(len(bodies)) as pool,
    ):
        sent: list[Future[httpx.Response]] = []
        try:
            for i, body in enumerate(bodies):
                sent.append(pool.submit(send, s, body))
                if i == 0:
                    s.engine.wait_jobs(1)[0].started.wait(WAIT_S)
                else:
                    wait_for(lambda i=i: s.gate.waiting == i, f"request {i + 1} to wait")
            yield s
        finally:
            hold.set()
        for answer in sent:
            assert answer.result(WAIT_S).status_code == 200
        wait_for(lambda: queue_len(s) == 0, "the queue to empty")
