"""Each rank's sign of life, outside MLX's collectives: a beat a second over a plain TCP socket.

A collective cannot tell a slow step (a long prefill chunk on a busy CPU) from a peer that is
frozen or gone: it just waits. A beat sent by a small thread of each rank's own can, whatever
the step in flight. Rank 0 listens on its group address (the one mlx.launch gives every rank:
the ring hostfile's first entry, or jaccl's coordinator), each other rank connects to it, and
both ends beat. A peer whose connection closes (it exited), or that is silent for DEAD_AFTER_S
(a frozen process, a pulled cable), is declared dead, once; the process then ends the group.
At a stop, the stop() comes first: the other ranks may go quiet from then on.

The same connection wakes the other ranks for rank 0's next job: MLX's ring backend spins a
core while a collective waits, so a rank waits for the job's wake here, asleep, and enters the
collective that carries the job only once it is on its way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

log = logging.getLogger("tholos.ranks")

BEAT_S = 1.0
# Silence this long means the peer is dead or frozen. THOLOS_RANK_HEARTBEAT_TIMEOUT overrides it.
DEAD_AFTER_S = float(os.environ.get("THOLOS_RANK_HEARTBEAT_TIMEOUT", "10"))
CONNECT_WAIT_S = 60.0  # at start, before any model loads: every rank joins within this
TOKEN_BYTES = 16  # a peer proves it is of this group: rank 0 shares the token over the group
RANK_BYTES = 4
BEAT, WAKE = b".", b"!"  # what a connection carries: a sign of life; rank 0's next job comes


def leader_host(env: Mapping[str, str]) -> str | None:
    """The IP the other ranks reach rank 0 on, from what mlx.launch set; None if it set none."""
    coordinator = env.get("MLX_JACCL_COORDINATOR")
    if coordinator:
        return coordinator.rsplit(":", 1)[0]
    hostfile = env.get("MLX_HOSTFILE")
    if not hostfile:
        return None
    try:
        hosts = json.loads(Path(hostfile).read_text(encoding="utf-8"))
        first = hosts[0][0] if isinstance(hosts[0], list) else hosts[0]
        return str(first).rsplit(":", 1)[0]
    except (OSError, ValueError, LookupError, TypeError):
        return None


class Heartbeat:
    """This rank's beats to its peers (rank 0: every other rank; the others: rank 0)."""

    def __init__(
        self,
        rank: int,
        size: int,
        on_dead: Callable[[int], None],
        *,
        beat: float = BEAT_S,
        dead_after: float = DEAD_AFTER_S,
    ) -> None:
        self.rank = rank
        self.size = size
        self._on_dead = on_dead
        self._beat = beat
        self._dead_after = dead_after
        self._lock = threading.Lock()
        self._peers: dict[int, socket.socket] = {}
        self._heard: dict[int, float] = {}  # peer rank -> when its last beat came
        self._server: socket.socket | None = None
        self._token = b""
        self._over = False  # a stop, or a peer already declared dead: nothing more to say
        self._wakes = threading.Semaphore(0)  # rank 0's jobs announced and not yet taken up

    # -- rank 0 --
    def listen(self, host: str) -> bytes:
        """Open the port the other ranks beat to; what they need to reach it, to share."""
        self._server = socket.create_server((host, 0))
        self._token = secrets.token_bytes(TOKEN_BYTES)
        port = self._server.getsockname()[1]
        return json.dumps({"host": host, "port": port, "token": self._token.hex()}).encode()

    def accept(self, timeout: float = CONNECT_WAIT_S) -> None:
        """Wait until every other rank has joined, then beat; TimeoutError if one does not."""
        assert self._server is not None
        deadline = time.monotonic() + timeout
        while len(self._peers) < self.size - 1:
            self._server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                raise TimeoutError(
                    f"only {len(self._peers) + 1} of {self.size} ranks joined the heartbeat"
                ) from None
            conn.settimeout(self._beat)
            try:
                hello = _read_exactly(conn, TOKEN_BYTES + RANK_BYTES)
            except OSError:
                conn.close()
                continue
            peer = int.from_bytes(hello[TOKEN_BYTES:], "big")
            if not secrets.compare_digest(hello[:TOKEN_BYTES], self._token) or not (
                0 < peer < self.size
            ):
                conn.close()  # not one of ours
                continue
            self._peers[peer] = conn
        self._server.close()
        self._start()

    # -- every other rank --
    def connect(self, shared: bytes, timeout: float = CONNECT_WAIT_S) -> None:
        """Join rank 0's heartbeat at the address it shared, then beat."""
        where = json.loads(shared)
        conn = socket.create_connection((where["host"], where["port"]), timeout=timeout)
        conn.sendall(bytes.fromhex(where["token"]) + self.rank.to_bytes(RANK_BYTES, "big"))
        conn.settimeout(self._beat)
        self._peers[0] = conn
        self._start()

    # -- any rank --
    def up(self) -> list[int]:
        """This rank and every peer heard within DEAD_AFTER_S."""
        now = time.monotonic()
        with self._lock:
            heard = [p for p, t in self._heard.items() if now - t <= self._dead_after]
        return sorted([self.rank, *heard])

    def wake(self) -> None:
        """Rank 0: tell every other rank that a job follows (before the collective carrying it)."""
        for conn in list(self._peers.values()):
            with contextlib.suppress(OSError):  # a gone peer: its own silence tells
                conn.sendall(WAKE)

    def wait_wake(self) -> None:
        """Another rank: sleep until rank 0 says a job follows. A dead rank 0 ends this process
        (on_dead), so this needs no timeout."""
        self._wakes.acquire()

    def stop(self) -> None:
        """The group is stopping: peers going quiet from now on are no news."""
        with self._lock:
            self._over = True

    def leave(self) -> None:
        """Close every connection: a live rank 0 hears at once that this rank is gone."""
        self.stop()
        for conn in list(self._peers.values()):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _start(self) -> None:
        now = time.monotonic()
        for peer, conn in self._peers.items():
            self._heard[peer] = now
            threading.Thread(
                target=self._listen_to, args=(peer, conn), name=f"tholos-beat-{peer}", daemon=True
            ).start()
        threading.Thread(target=self._send, name="tholos-beat", daemon=True).start()

    def _send(self) -> None:
        while True:
            with self._lock:
                if self._over:
                    return
            for conn in list(self._peers.values()):
                try:
                    conn.send(BEAT)
                except OSError:  # a full buffer or a closed peer: its own silence tells
                    pass
            time.sleep(self._beat)

    def _listen_to(self, peer: int, conn: socket.socket) -> None:
        while True:
            try:
                got = conn.recv(64)
            except TimeoutError:
                got = None
            except OSError:
                got = b""
            closed = got == b""  # the process exited or its machine dropped the link
            for _ in range(got.count(WAKE) if got else 0):
                self._wakes.release()
            with self._lock:
                if self._over:
                    return
                if got:
                    self._heard[peer] = time.monotonic()
                silent = time.monotonic() - self._heard[peer]
                if not closed and silent <= self._dead_after:
                    continue
                self._over = True
                break
        log.error(
            "rank %d %s: the group is broken",
            peer,
            "closed its connection" if closed else f"has been silent for {silent:.0f} s",
        )
        self._on_dead(peer)


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the peer closed before saying who it is")
        data += chunk
    return data
