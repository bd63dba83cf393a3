"""How a model splits across ranks, read from its config.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tholos_mlx.sharding import mode_for


def _folder(tmp_path: Path, **config: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_llama_whose_heads_divide_splits_tensor_parallel(tmp_path: Path) -> None:
    folder = _folder(tmp_path, model_type="llama", num_attention_heads=8, num_key_value_heads=4,
                     num_hidden_layers=4)  # fmt: skip
    assert mode_for(folder, 2) == "tensor"


def test_a_llama_whose_heads_do_not_divide_is_cut_into_stages_of_layers(tmp_path: Path) -> None:
    # The demo model: 9 heads, 3 KV heads; mlx-lm's shard would leave 4.5 heads per rank.
    folder = _folder(tmp_path, model_type="llama", num_attention_heads=9, num_key_value_heads=3,
                     num_hidden_layers=30)  # fmt: skip
    assert mode_for(folder, 2) == "stages"


def test_a_qwen2_whose_heads_do_not_divide_uses_mlx_lms_pipeline(tmp_path: Path) -> None:
    folder = _folder(tmp_path, model_type="qwen2", num_attention_heads=3, num_key_value_heads=1,
                     num_hidden_layers=4)  # fmt: skip
    assert mode_for(folder, 2) == "pipeline"


def test_a_model_with_neither_shard_nor_pipeline_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, model_type="gpt2", n_head=3, n_layer=4)
    with pytest.raises(ValueError) as err:
        mode_for(folder, 2)
    assert "gpt2" in str(err.value) and "\n" not in str(err.value)


def test_more_ranks_than_layers_cannot_be_a_pipeline(tmp_path: Path) -> None:
    folder = _folder(tmp_path, model_type="qwen2", num_attention_heads=3, num_key_value_heads=1,
                     num_hidden_layers=2)  # fmt: skip
    with pytest.raises(ValueError):
        mode_for(folder, 4)
