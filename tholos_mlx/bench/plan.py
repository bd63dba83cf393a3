"""What one `tholos-mlx bench` run will do: built once from the command line, then read-only."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tholos_mlx.bench.sides.client import Endpoint
from tholos_mlx.bench.synthetic import SHAPES
from tholos_mlx.errors import UsageError

Workload = Literal["edit", "prose"]
WORKLOADS: tuple[Workload, ...] = ("edit", "prose")


@dataclass(frozen=True)
class PeerSpec:
    """What --peer, --peer-url with --peer-model, or --hostfile asked for."""

    kind: Literal["mlx_lm", "url", "ranks"]
    endpoint: Endpoint | None = None  # for "url"
    model: str | None = None  # for "url"
    hostfile: Path | None = None  # for "ranks": our own server, one rank per host


@dataclass(frozen=True)
class Plan:
    """The cases to run and every size, count and place they use."""

    model: str | None
    compare: bool
    ceiling: bool
    cached_prefix: bool
    restart: bool
    structured: bool
    workload: Workload | None
    agent_turn: bool
    peer: PeerSpec | None
    synthetic: str | None
    prompt_tokens: tuple[int, ...]
    gen_tokens: int
    runs: int | None  # None: --runs auto
    max_seconds: float
    warmup: int
    ceiling_tokens: int
    profile: bool
    prefix_tokens: int
    num_draft_tokens: int | None
    out: Path
    port: int | None

    @property
    def wants_model(self) -> bool:
        """Whether any case runs a real model (the ceiling alone needs none)."""
        return (
            self.compare
            or self.cached_prefix
            or self.structured
            or self.restart
            or self.workload is not None
            or self.agent_turn
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        """The plan the parsed flags describe; UsageError for flags that do not go together."""
        peer = _peer(args)
        named = (
            args.compare
            or args.ceiling
            or args.cached_prefix
            or args.structured
            or args.restart
            or args.workload is not None
            or args.agent_turn
        )
        if args.synthetic and args.synthetic not in SHAPES:
            raise UsageError(f"--synthetic {args.synthetic}: choose one of {', '.join(SHAPES)}")
        if args.num_draft_tokens is not None and args.workload is None:
            raise UsageError("--num-draft-tokens goes with --workload edit|prose")
        return cls(
            model=args.model,
            # A peer is a side of the comparison; naming no case runs the comparison.
            compare=args.compare or peer is not None or not named,
            ceiling=args.ceiling,
            cached_prefix=args.cached_prefix,
            restart=args.restart,
            structured=args.structured,
            workload=args.workload,
            agent_turn=args.agent_turn,
            peer=peer,
            synthetic=args.synthetic,
            prompt_tokens=tuple(args.prompt_tokens),
            gen_tokens=args.gen_tokens,
            runs=args.runs,
            max_seconds=args.max_seconds,
            warmup=args.warmup,
            ceiling_tokens=args.ceiling_tokens,
            profile=args.profile,
            prefix_tokens=args.prefix_tokens,
            num_draft_tokens=args.num_draft_tokens,
            out=args.out,
            port=args.port,
        )


def _peer(args: argparse.Namespace) -> PeerSpec | None:
    chosen = [flag for flag, on in (("--peer", args.peer), ("--peer-url", args.peer_url),
                                    ("--hostfile", args.hostfile)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)}: choose one peer")
    if args.peer_url and not args.peer_model:
        raise UsageError("--peer-url needs --peer-model NAME: the model to ask that server for")
    if args.peer_model and not args.peer_url:
        raise UsageError("--peer-model goes with --peer-url")
    if args.peer_url:
        return PeerSpec("url", args.peer_url, args.peer_model)
    if args.hostfile:
        if not args.hostfile.is_file():
            raise UsageError(f"--hostfile {args.hostfile}: no such file")
        return PeerSpec("ranks", hostfile=args.hostfile.resolve())
    return PeerSpec("mlx_lm") if args.peer else None
