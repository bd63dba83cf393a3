"""A tiny random-weight llama with a 128k context that ends every answer at once: agents' long prompts fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import DEMO_ID

LONG_ID = "long-llama"
LONG_CONTEXT = 131072


def write_long_context_model(folder: Path, tokenizer_from: Path) -> Path:
    """A tiny random-weight llama with a 128k context and the demo model's tokenizer.

    Random weights would write until max_tokens (Claude Code asks for 32,000); this one ends
    every answer at once: its final norm keeps one hidden dimension and the output head maps it
    to the two end tokens with opposite signs, so one of them always wins by a wide margin.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from tests.tiny_model import model_args

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    vocab = int(json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    config = {
        **model_args(vocab),
        "max_position_embeddings": LONG_CONTEXT,
        # Smaller still than the fast lane's: agents' 20k-token prompts prefill on a shared CPU.
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
        "eos_token_id": [0, 2],  # SmolLM2's <|endoftext|> and <|im_end|>
    }
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    hidden = int(config["hidden_size"])  # type: ignore[call-overload]
    keep = mx.zeros((hidden,)).at[0].add(1.0)
    head = mx.zeros((vocab, hidden)).at[0, 0].add(1e4).at[2, 0].add(-1e4)
    model.model.norm.weight = keep
    model.lm_head.weight = head
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_agents_home(home: Path, demo_home: Path) -> Path:
    """A THOLOS_HOME with the demo model (8k context, tier fast) beside LONG_ID (tier long)."""
    shutil.copytree(demo_home / "models", home / "models")
    write_long_context_model(home / "models" / LONG_ID, home / "models" / DEMO_ID)
    (home / "tiers.toml").write_text(
        f'[models.{DEMO_ID}]\npath = "models/{DEMO_ID}"\ntier = "fast"\n\n'
        f'[models.{LONG_ID}]\npath = "models/{LONG_ID}"\ntier = "long"\n'
    )
    return home
