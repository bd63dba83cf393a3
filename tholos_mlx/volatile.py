"""Lines agents put in their prompts that change every request, and the prompt without them.

A prefix cache reuses a prompt up to its first changed token: one line near the head that
differs per request or per session (Claude Code's billing header: a per-session fingerprint,
and against api.anthropic.com a per-request `cch=` hash) makes the whole prompt after it miss.
These lines say nothing to the model, so they are dropped before the template renders the
prompt. The list is in docs/agents.md ("Lines dropped from agents' prompts").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tholos_mlx.request import Message


@dataclass(frozen=True)
class Volatile:
    """One kind of line that changes between requests: who sends it, and how to know it."""

    agent: str
    pattern: re.Pattern[str]  # matches the whole line, its newline included


PATTERNS: tuple[Volatile, ...] = (
    # "x-anthropic-billing-header: cc_version=2.1.197.191; cc_entrypoint=sdk-cli; cch=...;"
    Volatile("Claude Code", re.compile(r"^x-anthropic-billing-header:[^\n]*(?:\n|$)", re.M)),
)


def steady(messages: Sequence[Message]) -> list[Message]:
    """The conversation with every volatile line dropped from its system turns (a turn left
    with no text at all is dropped too)."""
    out: list[Message] = []
    for m in messages:
        if m.role == "system":
            text = m.content
            for v in PATTERNS:
                text = v.pattern.sub("", text)
            if text != m.content:
                if not text.strip():
                    continue
                m = replace(m, content=text)
        out.append(m)
    return out
