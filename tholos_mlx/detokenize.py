"""Token ids to text, whole UTF-8 characters only: a character cut by the end is dropped, never replaced.

mlx-lm's streaming detokenizers decode held-back bytes with errors="replace" when they are
finalized, so an answer cut by max_tokens inside an emoji ended in U+FFFD (mlx-lm 0.32). Here
each token maps to its bytes once, an incremental UTF-8 decoder keeps an unfinished character
until its last byte arrives, and whatever is still unfinished at the end is never sent.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any, Protocol

from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, SPMStreamingDetokenizer


class Detokenizer(Protocol):
    """One answer's text, token by token."""

    def add(self, token: int) -> str:
        """The whole characters this token completes (maybe "")."""
        ...


class ByteDetokenizer:
    """Byte-level decoding over a table of each token's bytes (BPE and SentencePiece vocabularies)."""

    __slots__ = ("_table", "_decode", "_started", "_trim_first_space")

    def __init__(self, table: Sequence[bytes], trim_first_space: bool) -> None:
        self._table = table
        # "replace" only for bytes that can never become a character; an unfinished one waits.
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._started = False
        self._trim_first_space = trim_first_space

    def add(self, token: int) -> str:
        """The text this token completes; a token beyond the table (padded vocab) adds nothing."""
        raw = self._table[token] if 0 <= token < len(self._table) else b""
        text = self._decode(raw)
        if not self._started and text:
            self._started = True
            if self._trim_first_space and text[0] == " ":
                text = text[1:]  # as mlx-lm's detokenizers do: no leading space on an answer
        return text


class WholeDetokenizer:
    """For vocabularies without a byte table: decode everything so far, send what is new and whole."""

    __slots__ = ("_tokenizer", "_tokens", "_sent")

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._tokens: list[int] = []
        self._sent = 0

    def add(self, token: int) -> str:
        """New text since the last call, holding back a tail that decodes to U+FFFD (unfinished)."""
        self._tokens.append(token)
        text: str = self._tokenizer.decode(self._tokens)
        whole = text.rstrip("\ufffd")
        new = whole[self._sent :]
        self._sent = max(self._sent, len(whole))
        return new


class DetokenizerFactory:
    """Built once per loaded tokenizer; makes a fresh Detokenizer for each answer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._table: list[bytes] | None = None
        self._trim = True
        proto = getattr(tokenizer, "_detokenizer", None)
        if isinstance(proto, BPEStreamingDetokenizer):
            decoder = _byte_decoder()
            self._table = [_piece_bytes(p or "", decoder) for p in proto.tokenmap]
        elif isinstance(proto, SPMStreamingDetokenizer):
            self._table = [b.replace(b"\xe2\x96\x81", b" ") for b in proto.tokenmap]
            self._trim = bool(proto.trim_space)

    def __call__(self) -> Detokenizer:
        """A detokenizer for one answer."""
        if self._table is not None:
            return ByteDetokenizer(self._table, self._trim)
        return WholeDetokenizer(self._tokenizer)


def _piece_bytes(piece: str, decoder: dict[str, int]) -> bytes:
    """A byte-level BPE piece's bytes; characters outside the byte alphabet stand for themselves."""
    out = bytearray()
    for c in piece:
        if c in decoder:
            out.append(decoder[c])
        else:
            out.extend(c.encode("utf-8"))
    return bytes(out)


def _byte_decoder() -> dict[str, int]:
    from mlx_lm.tokenizer_utils import _byte_decoder as decoder

    table: dict[str, int] = decoder()
    return table
