"""Where one request's time went inside the server, stamped as it passes, logged as one line.

At GPU speed a token lasts a few milliseconds, so the server's own costs show: the HTTP layer,
the wait for the engine thread, the chat template and tokenizer, the generation set-up, then
prefill and the first step, then the decode. The engine logs these figures (never any text) with
each request's summary line; `bench` reads them back to tell a gap in MLX's work from one in
the server's (issue 14).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

PREFIX = "timing"
FIELDS = ("http_ms", "queue_ms", "prompt_ms", "setup_ms", "first_token_ms", "decode_tps")
DRAFTS = ("drafted", "accepted")  # speculative decoding's counts, after the figures (issue 20)
_PAIR = re.compile(r"(\w+)=(-|[0-9.]+)")


@dataclass
class Timings:
    """perf_counter stamps of one request; each taken by the thread that reaches that point."""

    arrived: float | None  # the HTTP layer had the whole request (before parsing its body)
    queued: float  # asked for its turn (parsed, validated): the wait in line is queue_ms
    started: float = 0.0  # the engine thread took it up (and loaded its model, if it had to)
    prompted: float = 0.0  # chat template rendered and tokenized
    generating: float = 0.0  # generation began (prompt cache looked up, grammar compiled)
    first_token: float | None = None  # the first answer token was read back from MLX
    last_token: float | None = None
    tokens: int = 0  # answer tokens between first_token and last_token, both included
    drafted: int | None = None  # draft tokens the model verified (None: no speculation)...
    accepted: int | None = None  # ...and those it kept

    def figures(self) -> dict[str, float | None]:
        """Milliseconds per phase, and the decode rate between the first and the last token."""
        decode = None
        if self.first_token is not None and self.last_token is not None and self.tokens > 1:
            span = self.last_token - self.first_token
            decode = (self.tokens - 1) / span if span > 0 else None
        return {
            "http_ms": _ms(self.arrived, self.queued),
            "queue_ms": _ms(self.queued, self.started),
            "prompt_ms": _ms(self.started, self.prompted),
            "setup_ms": _ms(self.prompted, self.generating),
            "first_token_ms": _ms(self.generating, self.first_token),
            "decode_tps": decode,
        }

    def line(self) -> str:
        """`timing http_ms=0.41 ... decode_tps=38.90` (a dash for a figure unknown), then
        `drafted=12 accepted=9` where the answer was speculated."""
        pairs = [f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in self.figures().items()]
        if self.drafted is not None:
            pairs += [f"drafted={self.drafted}", f"accepted={self.accepted or 0}"]
        return " ".join((PREFIX, *pairs))


def now() -> float:
    """The clock every stamp uses."""
    return time.perf_counter()


def parse(line: str) -> dict[str, float | None] | None:
    """The figures of a log line that carries them (and its draft counts, where it has them),
    else None."""
    at = line.find(f" {PREFIX} ")
    if at < 0:
        return None
    found = dict(_PAIR.findall(line[at:]))
    if not all(k in found for k in FIELDS):
        return None
    keys = FIELDS + tuple(k for k in DRAFTS if k in found)
    return {k: None if found[k] == "-" else float(found[k]) for k in keys}


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or not start or not end:
        return None
    return (end - start) * 1e3
