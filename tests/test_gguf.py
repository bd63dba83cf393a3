"""Tests for tholos_mlx.gguf: GGUF files, real and hand-written, into MLX model folders."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.conftest import CLI, DEMO_ID, DEMO_TIER
from tholos_mlx import gguf
from tholos_mlx.errors import UsageError
from tholos_mlx.gguf_format import read_header
from tholos_mlx.tiers import TierTable

# --- a small GGUF writer, so the tests can make any file they need ----------------------------

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


def one_line_error(out: Any) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return str(lines[0])


def leftovers(home: Path) -> list[str]:
    models = home / "models"
    return sorted(os.listdir(models)) if models.exists() else []


# --- the real demo model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_loaded(demo_home: Path) -> Iterator[tuple[Any, Any]]:
    """The imported demo model loaded once by mlx_lm for this module's tests."""
    from mlx_lm import load

    yield load(str(demo_home / "models" / DEMO_ID))


def test_the_header_reader_reads_the_demo_files_metadata_and_tensors(demo_gguf: Path) -> None:
    h = read_header(demo_gguf)
    assert h.version == 3
    assert h.get("general.architecture") == "llama"
    assert h.get("tokenizer.ggml.model") == "gpt2"
    assert len(h.get("tokenizer.ggml.tokens")) == 49152
    embd = next(t for t in h.tensors if t.name == "token_embd.weight")
    assert (embd.type_name, embd.shape) == ("Q8_0", (576, 49152))
    assert {t.type_name for t in h.tensors} == {"F32", "Q4_1", "Q8_0"}
    assert h.data_offset % 32 == 0


def test_the_demo_model_imports_into_a_folder_mlx_lm_reads_with_a_tiers_entry(
    demo_home: Path,
) -> None:
    folder = demo_home / "models" / DEMO_ID
    names = sorted(os.listdir(folder))
    assert names == sorted(
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            gguf.MARKER,
        ]
    )
    table = tomllib.loads((demo_home / "tiers.toml").read_text())
    assert table["models"][DEMO_ID] == {"path": f"models/{DEMO_ID}", "tier": DEMO_TIER}
    assert TierTable(demo_home).resolve(DEMO_TIER).path == folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == 2
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    weights = mx.load(str(folder / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32  # still 4-bit
    marker = json.loads((folder / gguf.MARKER).read_text())
    assert marker["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert marker["source_size"] > 90_000_000
    assert leftovers(demo_home) == [DEMO_ID]


def test_the_demo_tokenizer_keeps_special_tokens_whole_and_round_trips(demo_home: Path) -> None:
    tok = Tokenizer.from_file(str(demo_home / "models" / DEMO_ID / "tokenizer.json"))
    assert tok.encode("<|im_start|>", add_special_tokens=False).ids == [1]
    assert tok.encode("<|im_end|>", add_special_tokens=False).ids == [2]
    enc = tok.encode("<|im_start|>user\nHi 2024<|im_end|>", add_special_tokens=False)
    assert enc.ids[0] == 1 and enc.ids[-1] == 2
    assert enc.tokens[-5:-1] == ["2", "0", "2", "4"]  # SmolLM2 splits digits one by one
    text = "Héllo  wörld, ça va? 🙂 tabs\tand\nnewlines"
    assert tok.decode(tok.encode(text).ids) == text
    cfg = json.loads((demo_home / "models" / DEMO_ID / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"], cfg["add_bos_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        False,
    )
    assert "<|im_start|>" in cfg["chat_template"]


def test_the_demo_model_answers_paris_when_decoding_greedily(demo_loaded: tuple[Any, Any]) -> None:
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = demo_loaded
    assert tokenizer.eos_token_ids == {2}
    assert type(tokenizer.detokenizer).__name__ == "BPEStreamingDetokenizer"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        add_generation_prompt=True,
    )
    assert prompt[-4:] == tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    text = generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(0.0))
    assert "Paris" in text


# --- failures: exit 2, one line, nothing left behind -------------------------------------------


def test_a_truncated_gguf_exits_2_with_one_line_and_leaves_nothing(
    cli: CLI, demo_gguf: Path, tmp_path: Path, tholos_home: Path
) -> None:
    cut = tmp_path / "cut.gguf"
    with open(demo_gguf, "rb") as src:
        cut.write_bytes(src.read(60_000_000))
    line = one_line_error(cli("import-gguf", cut, "--id", "cut"))
    assert "truncated" in line and "cut.gguf" in line
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


def test_a_gguf_cut_inside_its_header_exits_2_with_one_line(
    cli: CLI, demo_gguf: Path, tmp_path: Path, tholos_home: Path
) -> None:
    cut = tmp_path / "head.gguf"
    with open(demo_gguf, "rb") as src:
        cut.write_bytes(src.read(5000))
    assert "truncated" in one_line_error(cli("import-gguf", cut, "--id", "cut"))
    assert leftovers(tholos_home) == []


def test_a_file_that_is_not_gguf_exits_2_with_one_line(
    cli: CLI, tmp_path: Path, tholos_home: Path
) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("just some text, not a model\n")
    assert "not a GGUF file" in one_line_error(cli("import-gguf", bogus, "--id", "x"))
    assert leftovers(tholos_home) == []


def test_an_unsupported_tensor_type_is_named(cli: CLI, tmp_path: Path, tholos_home: Path) -> None:
    src = write_gguf(
        tmp_path / "k.gguf",
        llama_meta(),
        [
            ("token_embd.weight", (2, 32), F32, b"\0" * 256),
            ("blk.0.ffn_down.weight", (1, 256), Q6_K, b"\0" * 210),
        ],
    )
    line = one_line_error(cli("import-gguf", src, "--id", "k"))
    assert line.endswith(
        "tensor blk.0.ffn_down.weight has type Q6_K; supported: F32, F16, Q4_0, Q4_1, Q8_0"
    )
    assert leftovers(tholos_home) == []


def test_an_unsupported_architecture_exits_2_naming_it(
    cli: CLI, tmp_path: Path, tholos_home: Path
) -> None:
    src = write_gguf(
        tmp_path / "g.gguf",
        {"general.architecture": "gpt2"},
        [
            ("token_embd.weight", (2, 32), F32, b"\0" * 256),
        ],
    )
    line = one_line_error(cli("import-gguf", src, "--id", "g"))
    assert "architecture 'gpt2' is not supported" in line
    assert leftovers(tholos_home) == []


def test_a_mixture_of_experts_llama_is_refused(tmp_path: Path) -> None:
    src = write_gguf(
        tmp_path / "moe.gguf",
        llama_meta(),
        [
            ("token_embd.weight", (2, 32), F32, b"\0" * 256),
            ("blk.0.ffn_gate_exps.weight", (2, 32), F32, b"\0" * 256),
        ],
    )
    with pytest.raises(UsageError, match="mixture-of-experts"):
        gguf.inspect(src)


def test_an_unknown_tokenizer_type_fails_cleanly_and_leaves_nothing(
    tmp_path: Path, tholos_home: Path
) -> None:
    src = write_gguf(
        tmp_path / "t.gguf",
        llama_meta(
            **{
                "llama.block_count": 0,
                "llama.embedding_length": 32,
                "llama.feed_forward_length": 32,
                "llama.attention.head_count": 1,
                "tokenizer.ggml.model": "bert",
                "tokenizer.ggml.tokens": ["a", "b"],
            }
        ),
        [
            ("token_embd.weight", (2, 32), F32, b"\0" * 256),
            ("output_norm.weight", (32,), F32, b"\0" * 128),
        ],
    )
    with pytest.raises(UsageError, match="tokenizer type 'bert' is not supported"):
        gguf.import_command(src, tholos_home, "t", None, False)
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


def test_an_unreadable_tiers_toml_stops_the_import_before_anything_is_written(
    demo_gguf: Path, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text("[models.x\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        gguf.import_command(demo_gguf, tholos_home, "x", None, False)
    assert leftovers(tholos_home) == []
    assert (tholos_home / "tiers.toml").read_text() == "[models.x\n"


def test_an_interrupted_import_leaves_nothing_behind(
    demo_gguf: Path, tholos_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(folder: Path) -> None:
        assert (folder / "model.safetensors").exists()  # halfway: weights written, not yet in place
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_check_loads", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gguf.import_command(demo_gguf, tholos_home, "half", "fast", False)
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


# --- existing ids: refuse without --force, replace with it ---------------------------------------


def test_an_existing_id_is_refused_without_force_and_replaced_with_it(
    cli: CLI, demo_gguf: Path, demo_home: Path, tholos_home: Path
) -> None:
    shutil.copytree(demo_home / "models", tholos_home / "models")
    shutil.copy(demo_home / "tiers.toml", tholos_home / "tiers.toml")
    folder = tholos_home / "models" / DEMO_ID
    before = folder.stat().st_ino

    line = one_line_error(cli("import-gguf", demo_gguf, "--id", DEMO_ID))
    assert "already exists" in line and "--force" in line
    assert folder.stat().st_ino == before

    out = cli("import-gguf", demo_gguf, "--id", DEMO_ID, "--force")
    assert out.returncode == 0, out.stderr
    assert folder.stat().st_ino != before  # a new folder, renamed into place
    assert (folder / gguf.MARKER).is_file()
    assert leftovers(tholos_home) == [DEMO_ID]
    # Without --tier the replacement keeps the tier it had.
    assert [(e.id, e.tier) for e in TierTable(tholos_home).entries()] == [(DEMO_ID, DEMO_TIER)]


def test_an_id_only_named_in_tiers_toml_also_needs_force(
    cli: CLI, demo_gguf: Path, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text('[models.taken]\npath = "/nowhere"\ntier = "fast"\n')
    assert "already exists" in one_line_error(cli("import-gguf", demo_gguf, "--id", "taken"))


def test_force_never_replaces_a_folder_that_import_gguf_did_not_make(
    cli: CLI, demo_gguf: Path, tholos_home: Path
) -> None:
    mine = tholos_home / "models" / "mine"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    line = one_line_error(cli("import-gguf", demo_gguf, "--id", "mine", "--force"))
    assert "not made by import-gguf" in line
    assert os.listdir(mine) == ["config.json"]


def test_a_failed_replacement_puts_the_old_model_back(
    demo_gguf: Path, demo_home: Path, tholos_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(demo_home / "models", tholos_home / "models")
    shutil.copy(demo_home / "tiers.toml", tholos_home / "tiers.toml")
    before = (tholos_home / "models" / DEMO_ID / gguf.MARKER).read_text()

    def full_disk(self: TierTable, *args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TierTable, "add", full_disk)
    with pytest.raises(UsageError, match="No space left on device"):
        gguf.import_command(demo_gguf, tholos_home, DEMO_ID, "fast", True)
    assert (tholos_home / "models" / DEMO_ID / gguf.MARKER).read_text() == before
    assert leftovers(tholos_home) == [DEMO_ID]


# --- a tiny hand-made llama: SentencePiece vocabulary, every tensor type, Llama 3 rope ---------

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
    assert gguf.import_command(src, tholos_home, "tiny", "small", False) == 0
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
    gguf.convert(src, folder, progress=lambda what, done: seen.append((what, done)))
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
