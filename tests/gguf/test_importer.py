"""Tests for tholos_mlx.gguf.importer: GGUF files, real and hand-written, into MLX model folders."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from tokenizers import Tokenizer

from tests.conftest import CLI, DEMO_ID, DEMO_TIER
from tests.gguf.writer import F32, Q6_K, llama_meta, small_llama, write_gguf
from tholos_mlx.errors import UsageError
from tholos_mlx.gguf import importer
from tholos_mlx.gguf.format import read_header
from tholos_mlx.home import IMPORT_MARKER
from tholos_mlx.tiers import TierTable


def one_line_error(out: Any) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return str(lines[0])


def leftovers(home: Path) -> list[str]:
    models = home / "models"
    return sorted(os.listdir(models)) if models.exists() else []


# --- the real demo model: the real file's header, tokenizer and weights (the e2e lane) ----------


@pytest.fixture(scope="module")
def demo_loaded(demo_home: Path) -> Iterator[tuple[Any, Any]]:
    """The imported demo model loaded once by mlx_lm for this module's tests."""
    from mlx_lm import load

    yield load(str(demo_home / "models" / DEMO_ID))


@pytest.mark.e2e
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


@pytest.mark.e2e
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
            IMPORT_MARKER,
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
    marker = json.loads((folder / IMPORT_MARKER).read_text())
    assert marker["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert marker["source_size"] > 90_000_000
    assert leftovers(demo_home) == [DEMO_ID]


@pytest.mark.e2e
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


@pytest.mark.e2e  # the real demo model decoding: the slow lane
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


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer F32 llama GGUF (80 kB) that imports cleanly; read-only."""
    return small_llama(tmp_path_factory.mktemp("small") / "small.gguf")


def test_a_truncated_gguf_exits_2_with_one_line_and_leaves_nothing(
    cli: CLI, small_gguf: Path, tmp_path: Path, tholos_home: Path
) -> None:
    cut = tmp_path / "cut.gguf"
    data = small_gguf.read_bytes()
    cut.write_bytes(data[: (read_header(small_gguf).data_offset + len(data)) // 2])  # mid-weights
    line = one_line_error(cli("import-gguf", cut, "--id", "cut"))
    assert "truncated" in line and "cut.gguf" in line
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


def test_a_gguf_cut_inside_its_header_exits_2_with_one_line(
    cli: CLI, small_gguf: Path, tmp_path: Path, tholos_home: Path
) -> None:
    cut = tmp_path / "head.gguf"
    cut.write_bytes(small_gguf.read_bytes()[: read_header(small_gguf).data_offset // 2])
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
        importer.inspect(src)


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
        importer.import_command(src, tholos_home, "t", None, False)
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


def test_an_unreadable_tiers_toml_stops_the_import_before_anything_is_written(
    small_gguf: Path, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text("[models.x\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        importer.import_command(small_gguf, tholos_home, "x", None, False)
    assert leftovers(tholos_home) == []
    assert (tholos_home / "tiers.toml").read_text() == "[models.x\n"


def test_an_interrupted_import_leaves_nothing_behind(
    small_gguf: Path, tholos_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(folder: Path) -> None:
        assert (folder / "model.safetensors").exists()  # halfway: weights written, not yet in place
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "_check_loads", interrupt)
    with pytest.raises(KeyboardInterrupt):
        importer.import_command(small_gguf, tholos_home, "half", "fast", False)
    assert leftovers(tholos_home) == [] and not (tholos_home / "tiers.toml").exists()


# --- existing ids: refuse without --force, replace with it ---------------------------------------


def test_an_existing_id_is_refused_without_force_and_replaced_with_it(
    cli: CLI, small_gguf: Path, tholos_home: Path
) -> None:
    assert importer.import_command(small_gguf, tholos_home, "small", "fast", False) == 0
    folder = tholos_home / "models" / "small"
    before = folder.stat().st_ino

    line = one_line_error(cli("import-gguf", small_gguf, "--id", "small"))
    assert "already exists" in line and "--force" in line
    assert folder.stat().st_ino == before

    out = cli("import-gguf", small_gguf, "--id", "small", "--force")
    assert out.returncode == 0, out.stderr
    assert folder.stat().st_ino != before  # a new folder, renamed into place
    assert (folder / IMPORT_MARKER).is_file()
    assert leftovers(tholos_home) == ["small"]
    # Without --tier the replacement keeps the tier it had.
    assert [(e.id, e.tier) for e in TierTable(tholos_home).entries()] == [("small", "fast")]


def test_an_id_only_named_in_tiers_toml_also_needs_force(
    cli: CLI, small_gguf: Path, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text('[models.taken]\npath = "/nowhere"\ntier = "fast"\n')
    assert "already exists" in one_line_error(cli("import-gguf", small_gguf, "--id", "taken"))


def test_force_never_replaces_a_folder_that_import_gguf_did_not_make(
    cli: CLI, small_gguf: Path, tholos_home: Path
) -> None:
    mine = tholos_home / "models" / "mine"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    line = one_line_error(cli("import-gguf", small_gguf, "--id", "mine", "--force"))
    assert "not made by import-gguf" in line
    assert os.listdir(mine) == ["config.json"]


def test_a_failed_replacement_puts_the_old_model_back(
    small_gguf: Path, tholos_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert importer.import_command(small_gguf, tholos_home, "small", "fast", False) == 0
    before = (tholos_home / "models" / "small" / IMPORT_MARKER).read_text()

    def full_disk(self: TierTable, *args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TierTable, "add", full_disk)
    with pytest.raises(UsageError, match="No space left on device"):
        importer.import_command(small_gguf, tholos_home, "small", "fast", True)
    assert (tholos_home / "models" / "small" / IMPORT_MARKER).read_text() == before
    assert leftovers(tholos_home) == ["small"]
