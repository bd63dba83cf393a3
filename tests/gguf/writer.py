"""A small GGUF writer, so the gguf tests can make any file they need."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

F32, F16, Q4_0, Q4_1, Q8_0, Q6_K = 0, 1, 2, 3, 8, 14
_U32, _I32, _F32, _BOOL, _STR, _ARR = 4, 5, 6, 7, 8, 9


def _s(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(v: Any) -> tuple[int, bytes]:
    """GGUF type id and bytes for a Python value (bool, int -> u32, float -> f32, str, list)."""
    if isinstance(v, bool):
        return _BOOL, struct.pack("<?", v)
    if isinstance(v, int):
        return _U32, struct.pack("<I", v)
    if isinstance(v, float):
        return _F32, struct.pack("<f", v)
    if isinstance(v, str):
        return _STR, _s(v)
    if isinstance(v, list):
        if all(isinstance(x, str) for x in v):
            return _ARR, struct.pack("<IQ", _STR, len(v)) + b"".join(_s(x) for x in v)
        if all(isinstance(x, int) for x in v):
            return _ARR, struct.pack("<IQ", _I32, len(v)) + struct.pack(f"<{len(v)}i", *v)
        return _ARR, struct.pack("<IQ", _F32, len(v)) + struct.pack(f"<{len(v)}f", *v)
    raise TypeError(v)


def write_gguf(
    path: Path, meta: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], int, bytes]]
) -> Path:
    """A GGUF v3 file; shapes are given in numpy order and written reversed, as ggml does."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for key, value in meta.items():
        vtype, data = _value(value)
        out += [_s(key), struct.pack("<I", vtype), data]
    offset, blobs = 0, []
    for name, shape, ggml_type, data in tensors:
        out += [
            _s(name),
            struct.pack("<I", len(shape)),
            *(struct.pack("<Q", d) for d in reversed(shape)),
        ]
        out.append(struct.pack("<IQ", ggml_type, offset))
        pad = -len(data) % 32
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"".join(out)
    path.write_bytes(head + b"\0" * (-len(head) % 32) + b"".join(blobs))
    return path


def q8_0(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """llama.cpp's Q8_0 blocks for w, and the values they stand for."""
    b = w.reshape(-1, 32).astype(np.float32)
    d = (np.abs(b).max(axis=1, keepdims=True) / 127).astype(np.float16)
    q = np.round(b / np.where(d == 0, 1, d).astype(np.float32)).astype(np.int8)
    raw = b"".join(d[i].tobytes() + q[i].tobytes() for i in range(len(b)))
    return raw, (q * d.astype(np.float32)).reshape(w.shape)


def q4_0(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """llama.cpp's Q4_0 blocks for w (signed max / -8 scale), and the values they stand for."""
    b = w.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)
    d = (b[np.arange(len(b)), idx] / -8).astype(np.float16)[:, None]
    q = np.minimum(15, (b / d.astype(np.float32) + 8.5).astype(np.int8)).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    raw = b"".join(d[i].tobytes() + packed[i].tobytes() for i in range(len(b)))
    return raw, ((q.astype(np.float32) - 8) * d.astype(np.float32)).reshape(w.shape)


def q4_1(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """llama.cpp's Q4_1 blocks for w (scale and minimum), and the values they stand for."""
    b = w.reshape(-1, 32).astype(np.float32)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d, m = ((hi - lo) / 15).astype(np.float16), lo.astype(np.float16)
    q = np.minimum(15, ((b - lo) / d.astype(np.float32) + 0.5).astype(np.int8)).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    raw = b"".join(d[i].tobytes() + m[i].tobytes() + packed[i].tobytes() for i in range(len(b)))
    return raw, (q * d.astype(np.float32) + m.astype(np.float32)).reshape(w.shape)


def plain(w: np.ndarray, ggml_type: int) -> tuple[bytes, np.ndarray]:
    """F32 or F16 data for w, and the values they stand for."""
    arr = w.astype(np.float32 if ggml_type == F32 else np.float16)
    return arr.tobytes(), arr.astype(np.float32)


def llama_meta(**extra: Any) -> dict[str, Any]:
    """Metadata of a tiny llama with a SentencePiece vocabulary."""
    meta: dict[str, Any] = {"general.architecture": "llama", "general.name": "tiny"}
    meta.update(extra)
    return meta


def small_llama(path: Path, seed: int = 0) -> Path:
    """A one-layer F32 llama with a byte-fallback SentencePiece vocabulary that imports and loads."""
    rng = np.random.default_rng(seed)
    pieces = ["▁", "h", "i", "▁h", "▁hi"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces
    hidden, ff, vocab = 32, 64, len(tokens)
    shapes = {
        "token_embd.weight": (vocab, hidden),
        "output_norm.weight": (hidden,),
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (hidden // 2, hidden),
        "blk.0.attn_v.weight": (hidden // 2, hidden),
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_gate.weight": (ff, hidden),
        "blk.0.ffn_up.weight": (ff, hidden),
        "blk.0.ffn_down.weight": (hidden, ff),
        "blk.0.attn_norm.weight": (hidden,),
        "blk.0.ffn_norm.weight": (hidden,),
    }
    tensors = [
        (name, shape, F32, rng.standard_normal(shape, dtype=np.float32).tobytes())
        for name, shape in shapes.items()
    ]
    meta = llama_meta(
        **{
            "llama.block_count": 1,
            "llama.context_length": 512,
            "llama.embedding_length": hidden,
            "llama.feed_forward_length": ff,
            "llama.attention.head_count": 2,
            "llama.attention.head_count_kv": 1,
            "llama.rope.freq_base": 10000.0,
            "llama.attention.layer_norm_rms_epsilon": 1e-5,
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces))],
            "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(pieces),
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0,
        }
    )
    return write_gguf(path, meta, tensors)
