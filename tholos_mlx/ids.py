"""Fresh random ids shaped like the APIs' own: a prefix, then letters and digits or hex digits."""

from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_letters + string.digits


def alnum_id(prefix: str, length: int) -> str:
    """`prefix` and `length` random letters and digits ("chatcmpl-", "call_", "msg_")."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def hex_id(prefix: str, length: int) -> str:
    """`prefix`, "_" and `length` random hex digits, as OpenAI's Responses ids."""
    return f"{prefix}_{secrets.token_hex(length // 2)}"
