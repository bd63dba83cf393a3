"""Random-weight standard shapes: built without a download, loadable, honest about being random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import results
from tests.conftest import CLI, DEMO_ID
from tests.tiny_model import TINY_ID
from tholos_mlx.bench import synthetic
from tholos_mlx.bench.sides.client import Endpoint, free_port
from tholos_mlx.bench.sides.server import ServerProcess
from tholos_mlx.errors import UsageError


def test_a_synthetic_model_loads_as_a_4_bit_llama_of_its_shape_with_the_given_tokenizer(
    tiny_model: Path, tiny_folder: Path
) -> None:
    from mlx_lm import load

    model = load(str(tiny_model))[0]
    shape = synthetic.SHAPES["tiny"]
    # What mlx-lm built from the saved weights, not what config.json repeats of SHAPES.
    assert len(model.layers) == shape.layers
    q = model.layers[0].self_attn.q_proj
    assert (q.bits, q.group_size) == (4, 64)
    assert q.weight.shape == (shape.heads * shape.head_dim, shape.hidden * 4 // 32)
    assert model.layers[0].mlp.up_proj.weight.shape[0] == shape.intermediate
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["synthetic"] == {"shape": "tiny", "weights": "random", "tokenizer_from": TINY_ID}
    source = tiny_folder / "tokenizer.json"
    assert (tiny_model / "tokenizer.json").read_bytes() == source.read_bytes()


def test_greedy_decoding_of_a_synthetic_model_never_picks_eos_or_an_unknown_id(
    tiny_model: Path,
) -> None:
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model))[:2]
    logits = model(mx.array([[5, 17, 300, len(tokenizer.get_vocab()) - 1]]))[0]
    eos = sorted(tokenizer.eos_token_ids)
    assert mx.all(logits[:, eos] == 0).item()  # their output rows are zero
    assert mx.all(mx.max(logits, axis=-1) > 0).item()  # so greedy always finds a better token
    assert len(tokenizer.get_vocab()) <= logits.shape[-1]


# Parameter counts Meta publishes for these models: a wrong dimension in SHAPES changes them.
PUBLISHED_PARAMETERS = {
    "llama-1b": 1_235_814_400,  # Llama 3.2 1B
    "llama-3b": 3_212_749_824,  # Llama 3.2 3B
    "llama-8b": 8_030_261_248,  # Llama 3.1 8B
}


@pytest.mark.parametrize("shape", sorted(PUBLISHED_PARAMETERS))
def test_the_standard_shapes_have_the_published_parameter_counts(shape: str) -> None:
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    # MLX is lazy: the model's arrays are never computed, only their shapes are read.
    args = llama.ModelArgs.from_dict(synthetic.config(shape, 128256, TINY_ID))
    model = llama.Model(args)
    count = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert count == PUBLISHED_PARAMETERS[shape]


def test_an_unknown_shape_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="llama-1b"):
        synthetic.build("llama-70b", tmp_path, tmp_path / "m")


@pytest.mark.e2e
def test_bench_on_a_synthetic_model_against_a_running_peer_measures_until_told_enough(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    # Both sides on the demo model's tokenizer, as a user runs it: the synthetic model bench
    # builds and the peer's (its 49k-token embedding makes MLX's peak a figure above 0 MiB).
    peer_model = synthetic.build("tiny", demo_home / "models" / DEMO_ID, tmp_path / "peer-model")
    peer = Endpoint("127.0.0.1", free_port())
    args = ["mlx_lm", "server", "--model", str(peer_model), "--port", str(peer.port)]
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
