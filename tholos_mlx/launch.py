"""`serve --hostfile FILE`: start one rank per host through mlx.launch, and outlive none of them.

MLX's launcher starts `tholos-mlx serve` on each host of the hostfile (ssh, or directly for
127.0.0.1) with MLX_RANK set; rank 0 serves HTTP. This process only watches: the group ending
without being asked (a rank died, and mlx.launch stopped the others) is an exit status 1, so
launchd or systemd start the whole group again; SIGTERM stops the group and exits 0.

It also watches rank 0 itself, which serves HTTP on this machine: a rank 0 that answered
GET /health once and then stays silent for the heartbeat's dead time (frozen) ends the group
with exit status 1. The other ranks notice a frozen rank 0 too, but on other Macs they can end
only their own side, and mlx.launch here would wait for the frozen rank 0 forever.

The stop reaches the local ranks as SIGINT: rank 0 stops serving and then stops the other
ranks itself, who ignore SIGINT. SIGTERM is left to mean "this rank alone ends", which is
what mlx.launch sends the rest of a group when one rank failed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tholos_mlx.errors import UsageError

log = logging.getLogger("tholos.launch")

STOP_WAIT_S = 20.0  # at SIGTERM: rank 0 stops serving, then every rank saves its prompt cache
LOCAL = "127.0.0.1"
PROBE_TIMEOUT_S = 3.0  # one GET /health of rank 0; its event loop answers even mid-step
GROUP_ENV = "THOLOS_GROUP"  # set in every rank this launcher starts
# Settings read from the environment that every rank must share: ssh does not carry them.
SHARED_ENV = ("THOLOS_RANK_HEARTBEAT_TIMEOUT", "THOLOS_RANK_STEP_TIMEOUT", "THOLOS_LOG_LEVEL")


def launched() -> bool:
    """This process is one rank of a group that mlx.launch (or a user, by hand) started."""
    return "MLX_RANK" in os.environ


def end_local_group() -> None:
    """Kill mlx.launch and every rank on this machine, this one too (a broken group, at rank 0).

    mlx.launch waits for a rank it stops to exit, and a frozen one never does: killing its
    whole process group lets `serve --hostfile` see the group end and exit 1."""
    if os.environ.get(GROUP_ENV) == "1":
        os.killpg(os.getpgrp(), signal.SIGKILL)


def read_hosts(path: Path) -> list[dict[str, Any]]:
    """The hostfile's hosts as mlx.launch reads them; UsageError in one line if it cannot."""
    from mlx._distributed_utils.common import Hostfile  # mlx.launch's own parser

    try:
        hostfile = Hostfile.from_file(str(path))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise UsageError(f"--hostfile: {exc}") from None
    hosts = [{"ssh": h.ssh_hostname, "ips": list(h.ips)} for h in hostfile.hosts]
    if not hosts:
        raise UsageError(f"--hostfile {path}: no hosts in it")
    return hosts


def _free_ports(count: int) -> int:
    """A first port with `count` free ones after it on 127.0.0.1 (ranks sharing this machine)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((LOCAL, 0))
            first = int(s.getsockname()[1])
        if first + count >= 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind((LOCAL, port))
        except OSError:
            continue
        return first
    raise UsageError("no free ports on 127.0.0.1 for the ranks to talk over")


def launcher_argv(hostfile: Path, hosts: Sequence[dict[str, Any]], backend: str) -> list[str]:
    """mlx.launch's command line (mlx_launch: mlx's own, without its busy loop)."""
    argv = [sys.executable, "-m", "tholos_mlx.mlx_launch"]
    argv += ["--hostfile", str(hostfile), "--backend", backend, "--env", f"{GROUP_ENV}=1"]
    for name in SHARED_ENV:
        if name in os.environ:
            argv += ["--env", f"{name}={os.environ[name]}"]
    if all(ip == LOCAL for h in hosts for ip in h["ips"]):
        # Every rank on this machine: ports nobody holds, so two groups (or tests) can coexist.
        argv += ["--starting-port", str(_free_ports(sum(len(h["ips"]) for h in hosts)))]
    return argv


class Rank0Watch:
    """Asks `alive()` (rank 0's GET /health) every PROBE_EVERY_S from a thread of its own; once
    rank 0 has answered, `silent` is set when it has not answered for `dead_after` seconds.
    Before its first answer rank 0 is loading (minutes, for a big model): not judged then."""

    PROBE_EVERY_S = 1.0

    def __init__(self, alive: Callable[[], bool], dead_after: float) -> None:
        self._alive = alive
        self.dead_after = dead_after
        self.silent = threading.Event()
        self._heard: float | None = None
        threading.Thread(target=self._watch, name="tholos-rank0-watch", daemon=True).start()

    def _watch(self) -> None:
        while True:
            if self._alive():
                if self._heard is None:
                    log.info("rank 0 answers GET /health; watching it: %.0f s without an answer "
                             "ends the group", self.dead_after)  # fmt: skip
                self._heard = time.monotonic()
            elif self._heard is not None and time.monotonic() - self._heard > self.dead_after:
                self.silent.set()
                return
            time.sleep(self.PROBE_EVERY_S)


def run(
    hostfile: Path,
    backend: str,
    rank_argv: Sequence[str],
    alive: Callable[[], bool] | None = None,
) -> int:
    """Start the group and wait: 0 after SIGTERM stopped it, 1 if it ended on its own or rank 0
    went silent (`alive`, rank 0's /health, if given)."""
    from tholos_mlx.heartbeat import DEAD_AFTER_S

    hosts = read_hosts(hostfile)
    argv = [*launcher_argv(hostfile, hosts, backend), "--", *rank_argv]
    log.info("starting %d ranks (%s backend) on %s", len(hosts), backend,
             ", ".join(str(h["ssh"]) for h in hosts))  # fmt: skip
    # Its own process group: the local ranks are in it, so a stop reaches every one of them.
    # SIGINT ignored in it (mlx.launch and the ranks inherit that): rank 0 alone takes it up.
    # stdin a pipe that stays open: mlx.launch polls its stdin, and /dev/null would spin it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)
    asked: list[float] = []  # when the stop came

    def stop(signum: int, frame: Any) -> None:
        if not asked:
            asked.append(time.monotonic())
            _signal_group(proc.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watch = Rank0Watch(alive, DEAD_AFTER_S) if alive is not None else None
    while proc.poll() is None:
        if asked and time.monotonic() - asked[0] > STOP_WAIT_S:
            break  # a rank that does not stop: _reap kills what is left
        if not asked and watch is not None and watch.silent.is_set():
            log.error("rank 0 has not answered GET /health for %.0f s (frozen?); ending the "
                      "group and exiting 1", watch.dead_after)  # fmt: skip
            _signal_group(proc.pid, signal.SIGKILL)  # a stopped process takes only SIGKILL
            _reap(proc.pid, 2.0)
            return 1
        time.sleep(0.2)
    if asked:
        _reap(proc.pid, max(0.0, asked[0] + STOP_WAIT_S - time.monotonic()))
        return 0
    log.error("the group ended without being asked to (a rank stopped or died); exiting 1")
    _reap(proc.pid, 2.0)
    return 1


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(pgid: int, wait: float) -> None:
    """Wait for what is left of the group to exit, then kill it: nothing outlives the server."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)
