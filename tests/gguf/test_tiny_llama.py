"""A tiny hand-made llama through tholos_mlx.gguf: every tensor type, SentencePiece, Llama 3 rope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.gguf.writer import (
    F16,
    F32,
    Q4_0,
    Q4_1,
    Q8_0,
    llama_meta,
    plain,
    q4_0,
    q4_1,
    q8_0,
    write_gguf,
)
from tholos_mlx.gguf import importer

SPM_PIECES = [
    "▁",
    "h",
    "e",
    "l",
    "o",
    "w",
    "r",
    "d",
    "▁h",
    "ll",
    "▁he",
    "▁hell",
    "▁hello",
    "▁w",
    "or",
    "ld",
    "▁wor",
    "▁world",
]
ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 512,
}
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    singles = [p for p in SPM_PIECES if len(p) == 1]
    scores = [0.0] * 259 + [
        -100.0 - i if p in singles else -float(i) for i, p in enumerate(SPM_PIECES)
    ]
    return tokens, scores, types


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Q and K rows."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny random llama as a GGUF file, and the mlx-lm reference model it was written from."""
    from mlx_lm.models import llama

    tokens, scores, types = _spm_vocab()
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        rms_norm_eps=1e-5,
        vocab_size=len(tokens),
        rope_theta=10000.0,
        rope_traditional=False,
        rope_scaling=ROPE,
        tie_word_embeddings=False,
        max_position_embeddings=2048,
    )
    mx.random.seed(7)
    ref = llama.Model(args)
    hf = {k: np.array(v) for k, v in dict(_flatten(ref.parameters())).items()}
    kinds = {  # gguf name, ggml type, encoder: one of each supported type
        "model.embed_tokens.weight": ("token_embd.weight", Q8_0),
        "lm_head.weight": ("output.weight", Q4_0),
        "model.norm.weight": ("output_norm.weight", F32),
    }
    per_layer = {
        "self_attn.q_proj": ("attn_q", Q4_0),
        "self_attn.k_proj": ("attn_k", Q8_0),
        "self_attn.v_proj": ("attn_v", Q4_1),
        "self_attn.o_proj": ("attn_output", F16),
        "mlp.gate_proj": ("ffn_gate", F32),
        "mlp.up_proj": ("ffn_up", F16),
        "mlp.down_proj": ("ffn_down", Q4_1),
        "input_layernorm": ("attn_norm", F32),
        "post_attention_layernorm": ("ffn_norm", F32),
    }
    for i in range(args.num_hidden_layers):
        for hf_part, (g_part, t) in per_layer.items():
            kinds[f"model.layers.{i}.{hf_part}.weight"] = (f"blk.{i}.{g_part}.weight", t)
    encode = {
        Q8_0: q8_0,
        Q4_0: q4_0,
        Q4_1: q4_1,
        F32: lambda w: plain(w, F32),
        F16: lambda w: plain(w, F16),
    }
    tensors, exact = [], {}
    for name, (gname, t) in kinds.items():
        w = hf[name]
        if name.endswith("q_proj.weight"):
            w = _permute(w, args.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = _permute(w, args.num_key_value_heads)
        raw, values = encode[t](w)
        tensors.append((gname, w.shape, t, raw))
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # back to the reference's row order
            n = args.num_attention_heads if "q_proj" in name else args.num_key_value_heads
            values = (
                values.reshape(n, values.shape[0] // n // 2, 2, -1)
                .swapaxes(1, 2)
                .reshape(values.shape)
            )
        exact[name] = mx.array(values)
    rope = ref.model.layers[0].self_attn.rope
    periods = 10000.0 ** (np.arange(0, 32, 2) / 32)
    factors = (np.array(rope._freqs) / periods).astype(np.float32)
    tensors.append(("rope_freqs.weight", (16,), F32, factors.tobytes()))
    ref.load_weights(list(exact.items()))  # the reference holds exactly what the file stands for
    meta = llama_meta(
        **{
            "llama.block_count": 2,
            "llama.context_length": 2048,
            "llama.embedding_length": 64,
            "llama.feed_forward_length": 128,
            "llama.attention.head_count": 2,
            "llama.attention.head_count_kv": 1,
            "llama.rope.freq_base": 10000.0,
            "llama.attention.layer_norm_rms_epsilon": 1e-5,
            "llama.rope.dimension_count": 32,
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0,
            "tokenizer.chat_template": TEMPLATE,
        }
    )
    path = write_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", meta, tensors)
    return path, ref


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], tree


def test_a_tiny_llama_of_every_tensor_type_computes_what_its_source_model_computes(
    tiny: tuple[Path, Any], tholos_home: Path
) -> None:
    from mlx_lm import load

    src, ref = tiny
    assert importer.import_command(src, tholos_home, "tiny", "small", False) == 0
    folder = tholos_home / "models" / "tiny"
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_scaling"] == {
        **ROPE,
        "factor": 8,
        "low_freq_factor": 1,
        "high_freq_factor": 4,
    }
    assert config["tie_word_embeddings"] is False
    model, _ = load(str(folder))
    # 96 positions, so the low rope frequencies turn far enough for a wrong rope to show:
    # measured: a right conversion differs by ~0.002, no rope scaling ~0.1, wrong rope order ~0.5.
    mx.random.seed(1)
    ids = mx.random.randint(3, len(_spm_vocab()[0]), (1, 96))
    got, want = model(ids), ref(ids)
    assert got.shape == want.shape
    assert mx.abs(got - want).max().item() < 0.02


def test_a_sentencepiece_vocabulary_becomes_a_byte_fallback_tokenizer(
    tiny: tuple[Path, Any], tholos_home: Path
) -> None:
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    src, _ = tiny
    folder = tholos_home / "models" / "tiny"
    seen: list[tuple[str, float]] = []
    importer.convert(src, folder, progress=lambda what, done: seen.append((what, done)))
    assert seen[0] == ("reading tensors", 0.0) and seen[-1] == ("writing weights", 1.0)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.encode("hello world").tokens == ["<s>", "▁hello", "▁world"]
    assert tok.encode("hello é", add_special_tokens=False).tokens == [
        "▁hello",
        "▁",
        "<0xC3>",
        "<0xA9>",
    ]
    assert tok.decode(tok.encode("hello é world").ids) == "hello é world"
    wrapper = load_tokenizer(folder)
    assert wrapper.encode("hello")[0] == 1 and wrapper.encode("hello").count(1) == 1  # one BOS
    assert type(wrapper.detokenizer).__name__ == "SPMStreamingDetokenizer"
    assert wrapper.chat_template == TEMPLATE
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] == 2
