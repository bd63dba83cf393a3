"""A pure-Python reader of a GGUF file's header: metadata and tensor infos, no tensor data."""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml_type ids (ggml.h); names are the ones llama.cpp prints, so error messages match its tools.
GGML_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}

# (elements per block, bytes per block) for the types whose size we need to check truncation.
_BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "F64": (1, 8),
    "I8": (1, 1),
    "I16": (1, 2),
    "I32": (1, 4),
    "I64": (1, 8),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q8_1": (32, 36),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
    "Q8_K": (256, 292),
}

# GGUF metadata value types: id -> struct format (scalars) or a marker.
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 30  # no real key or token is a gigabyte: a bigger length means a corrupt file
_MAX_COUNT = 1 << 32


def printable(text: str) -> str:
    """Text from a file made safe for a one-line message: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class GGUFError(ValueError):
    """The file is not a readable GGUF file; the message is one line for the user."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it; shape is in ggml order (fastest axis first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # relative to the start of the data section

    @property
    def type_name(self) -> str:
        """The ggml type's name, e.g. Q4_0."""
        return GGML_TYPES.get(self.type_id, f"type {self.type_id}")

    @property
    def n_elements(self) -> int:
        """How many numbers the tensor holds."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def n_bytes(self) -> int | None:
        """Bytes of data in the file, or None for a type whose block size we do not know."""
        block = _BLOCKS.get(self.type_name)
        if block is None:
            return None
        per, size = block
        return -(-self.n_elements // per) * size


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data: version, metadata, tensor infos and where data starts."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value, or default."""
        return self.metadata.get(key, default)


class _Reader:
    """Sequential little-endian reads that turn a short read into GGUFError."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.pos = 0
        self.size = size

    def take(self, n: int) -> bytes:
        # Checked against the file size first, so a corrupt length never allocates gigabytes.
        if self.pos + n > self.size:
            raise GGUFError("truncated: the file ends inside its header")
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFError("truncated: the file ends inside its header")
        self.pos += n
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _MAX_STRING:
            raise GGUFError("corrupt header: a string length is impossibly large")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.scalar("<I"), self.scalar("<Q")
            if count > _MAX_COUNT:
                raise GGUFError("corrupt header: an array length is impossibly large")
            if itype in _SCALARS:
                # One struct call for a whole numeric array: token_type arrays hold ~100k items.
                fmt = _SCALARS[itype]
                size = struct.calcsize(fmt)
                return list(struct.unpack(f"<{count}{fmt[1]}", self.take(size * count)))
            return [self.value(itype) for _ in range(count)]
        raise GGUFError(f"corrupt header: unknown metadata value type {vtype}")


def read_header(path: Path) -> GGUFHeader:
    """Parse a GGUF file's header and check that every tensor's data lies inside the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        f = io.BufferedReader(raw, buffer_size=1 << 20)
        r = _Reader(f, size)
        if size < 4 or r.take(4) != MAGIC:
            raise GGUFError("not a GGUF file (it does not start with 'GGUF')")
        version = r.scalar("<I")
        if version not in (2, 3) and struct.unpack(">I", struct.pack("<I", version))[0] in (2, 3):
            raise GGUFError("big-endian GGUF files are not supported")
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version} (supported: 2, 3)")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
            raise GGUFError("corrupt header: impossible tensor or metadata count")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.scalar("<I"))
        tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar("<I")
            if n_dims > 8:
                raise GGUFError(f"corrupt header: tensor {printable(name)} has {n_dims} dimensions")
            shape = tuple(r.scalar("<Q") for _ in range(n_dims))
            tensors.append(TensorInfo(name, shape, r.scalar("<I"), r.scalar("<Q")))
        align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or align <= 0:
            raise GGUFError(f"corrupt header: general.alignment is {align!r}")
        here = r.pos
    data_offset = -(-here // align) * align
    header = GGUFHeader(version, metadata, tensors, data_offset, size)
    _check_extent(header)
    return header


def _check_extent(h: GGUFHeader) -> None:
    """A tensor whose data runs past the end of the file means a truncated download."""
    for t in h.tensors:
        n = t.n_bytes()
        end = h.data_offset + t.offset + (n or 0)
        if end > h.file_size:
            raise GGUFError(
                f"truncated: tensor {printable(t.name)} needs bytes up to {end:,} "
                f"but the file has {h.file_size:,}"
            )
