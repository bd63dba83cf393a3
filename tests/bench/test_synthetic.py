"""Random-weight standard shapes: built without a download, loadable, honest about being random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import results
from tests.conftest import CLI, DEMO_ID
from tholos_mlx.bench import synthetic
from tholos_mlx.bench.client import Endpoint, free_port
from tholos_mlx.bench.server import ServerProcess
from tholos_mlx.errors import UsageError


def test_a_synthetic_model_is_a_4_bit_llama_of_its_shape_with_the_given_tokenizer(
    tiny_model: Path, demo_home: Path
) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    shape = synthetic.SHAPES["tiny"]
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == shape.hidden and config["num_hidden_layers"] == shape.layers
    assert config["quantization"] == {"group_size": 64, "bits": 4}
    assert config["synthetic"] == {"shape": "tiny", "weights": "random", "tokenizer_from": DEMO_ID}
    demo = demo_home / "models" / DEMO_ID
    assert (tiny_model / "tokenizer.json").read_bytes() == (demo / "tokenizer.json").read_bytes()


def test_greedy_decoding_of_a_synthetic_model_never_picks_eos_or_an_unknown_id(
    tiny_model: Path,
) -> None:
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model))[:2]
    logits = model(mx.array([[5, 17, 300, 4000]]))[0]
    eos = sorted(tokenizer.eos_token_ids)
    assert mx.all(logits[:, eos] == 0).item()  # their output rows are zero
    assert mx.all(mx.max(logits, axis=-1) > 0).item()  # so greedy always finds a better token
    assert len(tokenizer.get_vocab()) <= logits.shape[-1]


def test_the_standard_shapes_are_those_of_llama_1b_3b_and_8b() -> None:
    assert set(synthetic.SHAPES) == {"tiny", "llama-1b", "llama-3b", "llama-8b"}
    c = synthetic.config("llama-8b", 128256, DEMO_ID)
    assert (c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]) == (4096, 32, 14336)
    assert (c["num_attention_heads"], c["num_key_value_heads"]) == (32, 8)
    assert c["tie_word_embeddings"] is False
    c = synthetic.config("llama-1b", 128256, DEMO_ID)
    assert (c["hidden_size"], c["num_hidden_layers"], c["head_dim"]) == (2048, 16, 64)


def test_an_unknown_shape_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="llama-1b"):
        synthetic.build("llama-70b", tmp_path, tmp_path / "m")


@pytest.mark.e2e
def test_bench_on_a_synthetic_model_against_a_running_peer_measures_until_told_enough(
    demo_home: Path, tiny_model: Path, tmp_path: Path, cli: CLI
) -> None:
    peer = Endpoint("127.0.0.1", free_port())
    args = ["mlx_lm", "server", "--model", str(tiny_model), "--port", str(peer.port)]
    with ServerProcess(args, peer, tmp_path / "peer.log"):
        out = cli(
            "bench",
            "--home",
            demo_home,
            "--synthetic",
            "tiny",
            "--peer-url",
            f"http://127.0.0.1:{peer.port}/v1",
            "--peer-model",
            "default_model",
            "--cached-prefix",
            "--prompt-tokens",
            "32",
            "--gen-tokens",
            "6",
            "--runs",
            "auto",
            "--max-seconds",
            "15",
            "--prefix-tokens",
            "48",
            "--out",
            tmp_path / "out",
            timeout=300,
        )
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path / "out")
    results.environment(result)
    model = result["model"]
    assert set(model) == results.MODEL
    assert model["id"] == "synthetic-tiny" and model["tier"] == "synthetic"
    assert model["synthetic"]["weights"] == "random" and model["quantization_bits"] == 4
    compare = result["compare"]
    assert compare["runs"] == "auto" and compare["max_seconds"] == 15
    case = results.compare(compare, gen=6, prompt_tokens=32, peer=True)
    assert case["stopped_by"][-1] in ("interval", "time cap", "run cap")
    assert case["runs"] >= 3, "15 s should hold a few rounds of a tiny model"
    # EOS can never win: every side generated every token it was asked for.
    assert case["server"]["stopped_early"] == case["peer"]["stopped_early"] == 0
    assert compare["peer"]["kind"] == "url" and compare["peer"]["command"] is None
    assert compare["peer"]["url"] == f"http://127.0.0.1:{peer.port}/v1"

    cached = result["cached_prefix"]
    assert cached["prompt_tokens"] == 48 and len(cached["warm"]) == 5  # auto: five warm requests
    assert all(w["cached_tokens"] > 0 for w in cached["warm"])
    results.is_stat(cached["warm_ttft_s"])

    assert "random weights" in out.stdout
    markdown = results.markdown(files)
    assert "The weights are random" in markdown and "server at http://127.0.0.1" in markdown
