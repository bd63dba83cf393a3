"""What the ranks of one group say to each other over mx.distributed: a job, a cancel, a stop.

Every rank runs the same engine on its shard. Rank 0 serves HTTP; before it runs a job
(a request, a model load or unload, the last stop) it sends the job to the other ranks, who
run the same pipeline on the same tokens. A cancel is agreed once per step (an all_sum of each
rank's flag, at the cancelled() poll generation makes between tokens and prefill chunks), and
so are the few decisions that depend on a rank's own memory (the cached prefix reused, the
answer's token budget): the smallest wins. Collectives block forever when a peer is gone or
frozen: each rank's heartbeat (heartbeat.py, outside the collectives) notices that within
seconds whatever the step's length, and, as a last resort, a watchdog ends the process when
a step waits longer than STEP_TIMEOUT_S.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import pickle
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Literal, cast

import mlx.core as mx
import numpy as np

from tholos_mlx import timings
from tholos_mlx.channel import Sink
from tholos_mlx.errors import ServiceUnavailable, TholosError
from tholos_mlx.events import Event
from tholos_mlx.heartbeat import Heartbeat
from tholos_mlx.request import GenerationRequest
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

log = logging.getLogger("tholos.ranks")

# A step (a token, a prefill chunk) that waits longer on the other ranks: one is gone or hung.
# The last resort (the heartbeat notices first); THOLOS_RANK_STEP_TIMEOUT overrides it.
STEP_TIMEOUT_S = float(os.environ.get("THOLOS_RANK_STEP_TIMEOUT", "300"))
BROKEN_RETRY_S = 10  # Retry-After once the group broke: launchd/systemd start it again by then
EXIT_GRACE_S = 1.5  # after a break, time for the error frame to go out before the exit

Runner = Callable[[Any, GenerationRequest, ModelEntry | None, Sink, Timings], None]


@dataclass(frozen=True)
class Job:
    """One thing every rank does together, in the order rank 0 sends them."""

    kind: Literal["run", "load", "unload", "stop"]
    request: GenerationRequest | None = None
    entry: ModelEntry | None = None
    seconds: float | None = None  # "stop": how long saving the prompt cache may take


class Watchdog:
    """Ends a wait on peers that lasts too long: collectives have no timeout of their own."""

    def __init__(self, on_trip: Callable[[], None], timeout: float = STEP_TIMEOUT_S) -> None:
        self._on_trip = on_trip
        self._timeout = timeout
        self._lock = threading.Lock()
        self._since: float | None = None  # armed: the last sign of life from every peer
        self._paused = 0
        self._thread = threading.Thread(target=self._watch, name="tholos-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Every peer answered just now: the clock restarts (and runs until disarm)."""
        with self._lock:
            self._since = time.monotonic()

    def disarm(self) -> None:
        """Between jobs a rank may wait for the next one as long as it likes."""
        with self._lock:
            self._since = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A model load: ranks take minutes, and not the same minutes."""
        with self._lock:
            self._paused += 1
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1
                if self._since is not None:
                    self._since = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self._timeout / 4))
            with self._lock:
                late = (
                    self._since is not None
                    and not self._paused
                    and time.monotonic() - self._since > self._timeout
                )
            if late:
                log.error(
                    "a step waited %.0f s on another rank: the group is broken", self._timeout
                )
                faulthandler.dump_traceback(all_threads=True)  # where this rank was waiting
                self._on_trip()
                return


class Ranks:
    """This process's end of the group: its rank, the group's size, and the messages."""

    def __init__(self, group: Any, watchdog: Watchdog) -> None:
        self.group = group
        self.rank: int = group.rank()
        self.size: int = group.size()
        self.watchdog = watchdog
        self.heartbeat: Heartbeat | None = None  # set once every rank has joined it

    def up(self) -> list[int]:
        """The ranks heard from lately (every one, without a heartbeat)."""
        return self.heartbeat.up() if self.heartbeat else list(range(self.size))

    def _sum(self, values: mx.array, stream: Any = None) -> mx.array:
        kwargs = {"stream": stream} if stream is not None else {}
        out = mx.distributed.all_sum(values, group=self.group, **kwargs)
        mx.eval(out)
        self.watchdog.beat()
        return out

    def send(self, job: Job) -> None:
        """Rank 0: every other rank receives this job next."""
        self.watchdog.beat()  # armed from here to the job's end
        if self.heartbeat:
            self.heartbeat.wake()  # the others wait asleep, not in a spinning collective
        if job.kind == "stop" and self.heartbeat:
            self.heartbeat.stop()  # the others exit now: their silence is no failure
        self._broadcast(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))

    def receive(self) -> Job:
        """Another rank: wait (as long as it takes) for rank 0's next job."""
        if self.heartbeat:
            self.heartbeat.wait_wake()
        job = pickle.loads(self._broadcast(b""))  # noqa: S301 (our own rank 0, same code)
        if not isinstance(job, Job):
            raise TypeError(f"rank 0 sent a {type(job).__name__}, not a Job")
        if job.kind == "stop" and self.heartbeat:
            self.heartbeat.stop()
        return job

    def share(self, data: bytes) -> bytes:
        """Rank 0's bytes, on every rank (the others pass b"")."""
        return self._broadcast(data)

    def _broadcast(self, data: bytes) -> bytes:
        # Between jobs nothing else is in flight: the CPU stream, as mlx-lm's own server does.
        n = int(cast(int, self._sum(mx.array([len(data)], dtype=mx.int64), mx.cpu).item()))
        if self.rank == 0:
            buf = mx.array(np.frombuffer(data, dtype=np.uint8))
        else:
            buf = mx.zeros((n,), dtype=mx.uint8)
        return bytes(np.array(self._sum(buf, mx.cpu), copy=False))

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: one collective, on the model's own stream."""
        return int(cast(int, self._sum(mx.array([int(flag)], dtype=mx.int32)).item())) > 0

    def least(self, n: int) -> int:
        """The smallest of every rank's n (memory-bound decisions: the tightest rank decides)."""
        out = mx.distributed.all_min(mx.array([n], dtype=mx.int64), group=self.group)
        mx.eval(out)
        self.watchdog.beat()
        return int(cast(int, out.item()))

    def done(self) -> None:
        """The job is over: waiting for the next one is no sign of a dead peer."""
        self.watchdog.disarm()


class AgreedSink:
    """A sink whose `cancelled` is agreed by every rank: read at the same points everywhere."""

    def __init__(self, local: Sink, ranks: Ranks) -> None:
        self._local = local
        self._ranks = ranks
        self._stopped = False

    def put(self, item: Event) -> None:
        """Rank 0's events go to the request; the others' are dropped."""
        self._local.put(item)

    @property
    def cancelled(self) -> bool:
        """Every rank stops at the same step once rank 0's client is gone."""
        if not self._stopped:
            self._stopped = self._ranks.any(self._local.cancelled)
        return self._stopped


class _Quiet:
    """The sink of a rank without HTTP: nobody reads its events, nobody cancels them."""

    cancelled = False

    def put(self, item: Event) -> None:
        """Dropped: rank 0 answers the request."""


class Leader:
    """Rank 0: the engine's slot and runner, wrapped so that every rank does what rank 0 does."""

    def __init__(self, ranks: Ranks, slot: Any, runner: Runner) -> None:
        self.ranks = ranks
        self._slot = slot
        self._runner = runner
        self._current: Sink | None = None
        self.broken = False
        self._on_broken: Callable[[], None] = lambda: None

    # -- the engine's Slot interface: a switch or unload the engine makes itself goes to all --
    @property
    def loaded_id(self) -> str | None:
        """The model in memory on every rank."""
        return self._slot.loaded_id  # type: ignore[no-any-return]

    @property
    def last_id(self) -> str | None:
        """The model idle unload freed, as the slot says."""
        return self._slot.last_id  # type: ignore[no-any-return]

    def switch(self, entry: ModelEntry) -> object:
        """Load a model on every rank (startup's --model)."""
        self._checked()
        try:
            self.ranks.send(Job("load", entry=entry))
            return self._slot.switch(entry)
        finally:
            self.ranks.done()

    def unload(self, deadline: float | None = None) -> None:
        """Idle unload on every rank; with a deadline (shutdown) the other ranks stop after it."""
        if not self.broken:
            seconds = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self.ranks.send(Job("unload" if deadline is None else "stop", seconds=seconds))
            except Exception as exc:  # a peer already gone at shutdown: our own unload still runs
                log.warning("could not reach the other ranks: %s", exc.__class__.__name__)
            finally:
                self.ranks.done()
        self._slot.unload(deadline)

    # -- the runner --
    def run(
        self,
        slot: Any,
        request: GenerationRequest,
        entry: ModelEntry | None,
        sink: Sink,
        times: Timings,
    ) -> None:
        """Send the job, then run it here as every other rank does; a seed so sampling agrees."""
        self._checked()
        if request.seed is None:
            request = replace(request, seed=secrets.randbits(63))
        self._current = sink
        try:
            self.ranks.send(Job("run", request=request, entry=entry))
            self._runner(self._slot, request, entry, AgreedSink(sink, self.ranks), times)
        except TholosError:
            raise  # the same refusal on every rank (they run the same checks)
        except Exception as exc:
            log.error("the group failed during a request: %s: %s", exc.__class__.__name__, exc)
            self.break_group()
            raise self._unavailable() from None
        finally:
            self._current = None
            self.ranks.done()

    def watch(self, on_broken: Callable[[], None]) -> None:
        """What the server does once the group broke (refuse new requests, then exit non-zero)."""
        self._on_broken = on_broken

    def stopping(self) -> None:
        """The server stops: ranks that go quiet from now on are not a broken group."""
        if self.ranks.heartbeat is not None:
            self.ranks.heartbeat.stop()

    def break_group(self) -> None:
        """A peer died or hangs: the request in flight ends with an error, then the process."""
        if self.broken:
            return
        self.broken = True
        current = self._current
        if current is not None:  # its engine thread may never return: tell the client now
            with contextlib.suppress(RuntimeError):  # the server stopped already: nobody to tell
                current.put(self._unavailable())
        self._on_broken()

    def health(self) -> dict[str, object]:
        """For GET /health: how many ranks, and which answered the group's last step."""
        up = [0] if self.broken else self.ranks.up()
        return {"ranks": self.ranks.size, "ranks_up": up}

    def _checked(self) -> None:
        if self.broken:
            raise self._unavailable()

    @staticmethod
    def _unavailable() -> ServiceUnavailable:
        return ServiceUnavailable(
            "Another rank of this server's group stopped answering; the server is restarting.",
            retry_after=BROKEN_RETRY_S,
        )


def follow(ranks: Ranks, slot: Any, runner: Runner) -> None:
    """Ranks other than 0: do what rank 0 sends, until it sends stop."""
    log.info("rank %d of %d: following rank 0 (pid %d)", ranks.rank, ranks.size, os.getpid())
    while True:
        job = ranks.receive()
        try:
            if job.kind == "stop":
                deadline = None if job.seconds is None else time.monotonic() + job.seconds
                slot.unload(deadline)
                return
            if job.kind == "unload":
                slot.unload()
            elif job.kind == "load" and job.entry is not None:
                slot.switch(job.entry)
            elif job.kind == "run" and job.request is not None:
                times = Timings(None, timings.now())
                runner(slot, job.request, job.entry, AgreedSink(_Quiet(), ranks), times)
        except TholosError as exc:  # rank 0 refuses the same request, and answers for it
            log.debug("rank %d: %s", ranks.rank, exc.code)
        finally:
            ranks.done()


def exit_soon(
    code: int, grace: float = EXIT_GRACE_S, last: Callable[[], None] = lambda: None
) -> None:
    """End the process after `grace` seconds, whatever its threads are blocked in; `last`
    runs just before (it may end the process itself)."""

    def bye() -> None:
        time.sleep(grace)
        logging.shutdown()
        last()
        os._exit(code)

    threading.Thread(target=bye, name="tholos-exit", daemon=True).start()
