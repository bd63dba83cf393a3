"""This process as one rank of the group `mlx.launch` started (serve --hostfile): joining it and
its heartbeat, leading it from rank 0, following from the others, and ending when it breaks.

The command line builds the engine; this module only wires a rank into its group.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from tholos_mlx.errors import UsageError


class RankGroup:
    """This process as one rank of the group mlx.launch started: its Ranks, Shards and Leader."""

    def __init__(self) -> None:
        self.ranks: Any = None
        self.leader: Any = None

    def join(self) -> Any:
        """This rank (ranks.Ranks), or None when the group is this process alone."""
        import mlx.core as mx

        from tholos_mlx.ranks import Ranks, Watchdog

        try:
            group = mx.distributed.init(strict=True)
        except RuntimeError as exc:
            raise UsageError(f"cannot join the group of ranks: {exc}") from None
        if group.size() < 2:
            return None
        self.ranks = Ranks(group, Watchdog(self._tripped))
        for handler in logging.getLogger().handlers:  # ranks share one terminal or log
            handler.setFormatter(
                logging.Formatter(
                    f"%(asctime)s %(levelname)s rank{self.ranks.rank} %(name)s: %(message)s"
                )
            )
        self.ranks.heartbeat = self._beat(self.ranks)
        return self.ranks

    def _beat(self, ranks: Any) -> Any:
        """Join the group's heartbeat (heartbeat.Heartbeat): rank 0 listens, the others connect."""
        from tholos_mlx import heartbeat

        beats = heartbeat.Heartbeat(ranks.rank, ranks.size, lambda _peer: self._tripped())
        none = b"{}"
        try:
            if ranks.rank == 0:
                host = heartbeat.leader_host(os.environ)
                try:
                    shared = beats.listen(host) if host else none
                except OSError as exc:
                    logging.getLogger("tholos.ranks").warning("heartbeat: %s", exc)
                    shared = none
                ranks.share(shared)
                if shared != none:
                    beats.accept()
            else:
                shared = ranks.share(b"")
                if shared != none:
                    beats.connect(shared)
        except OSError as exc:  # TimeoutError included: a rank that never joined
            raise UsageError(f"cannot join the ranks' heartbeat: {exc}") from None
        if shared == none:
            logging.getLogger("tholos.ranks").warning(
                "no address for the ranks' heartbeat (neither MLX_HOSTFILE nor "
                "MLX_JACCL_COORDINATOR): a frozen rank is noticed only by the step watchdog"
            )
            return None
        return beats

    def shards(self) -> Any:
        """This rank's part of every model it loads."""
        from tholos_mlx.sharding import Shards

        return Shards(self.ranks)

    def lead(self, slot: Any, runner: Any) -> Any:
        """Rank 0: the slot and runner that send every job to the other ranks first."""
        from tholos_mlx import launch
        from tholos_mlx.ranks import Leader, exit_soon

        self.leader = Leader(self.ranks, slot, runner)
        logging.getLogger("tholos.ranks").info(
            "rank 0 of %d: serving HTTP, leading the group (pid %d)", self.ranks.size, os.getpid()
        )
        # Until the server is up and says how it ends (refusing requests first).
        self.leader.watch(lambda: exit_soon(1, last=launch.end_local_group))
        return self.leader

    def _tripped(self) -> None:
        """A peer went silent, or a step waited too long on one: rank 0 answers 503 and exits
        non-zero, taking the local ranks with it."""
        if self.leader is not None:
            self.leader.break_group()
            return
        from tholos_mlx import launch
        from tholos_mlx.ranks import EXIT_GRACE_S, exit_soon

        # Another rank, or rank 0 still starting: leave first, so that a live rank 0 hears it
        # at once and answers its clients before it ends the group; a frozen one cannot, and
        # this rank ends the local group itself a moment later.
        if self.ranks.heartbeat is not None:
            self.ranks.heartbeat.leave()
        exit_soon(1, grace=2 * EXIT_GRACE_S, last=launch.end_local_group)


def exit_when_broken(app: Any, leader: Any, gate: Any) -> None:
    """Once the group breaks: waiting requests get 503 now, and the server exits 1 soon after."""
    import asyncio

    from tholos_mlx import launch
    from tholos_mlx.ranks import exit_soon

    loops: list[asyncio.AbstractEventLoop] = []

    async def keep(_app: Any) -> None:
        loops.append(asyncio.get_running_loop())

    def broken() -> None:
        for loop in loops:
            loop.call_soon_threadsafe(gate.close)
        exit_soon(1, last=launch.end_local_group)

    app.register_listener(keep, "before_server_start")
    leader.watch(broken)


def follow(ranks: Any, slot: Any, runner: Any) -> int:
    """A rank other than 0: no HTTP, only rank 0's jobs, until it sends stop or the group breaks."""
    from tholos_mlx import ranks as group

    log = logging.getLogger("tholos.serve")
    # `serve --hostfile` stops the group with SIGINT to every local rank at once: rank 0 alone
    # acts on it, and stops this rank with a job once it has stopped serving (this rank saves
    # its prompt cache then); were this rank to exit first, rank 0 would take that for a broken
    # group. SIGTERM still ends this rank alone (mlx.launch's stop after a rank failed, a user).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        group.follow(ranks, slot, runner)
    except Exception as exc:  # rank 0 gone, or this rank out of step: the group must restart
        log.error("rank %d leaves the group: %s: %s", ranks.rank, exc.__class__.__name__, exc)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
