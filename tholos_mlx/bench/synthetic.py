"""Random-weight 4-bit llama folders of standard shapes: the same model on every machine, no download.

The weights are random, so the answers are gibberish; what is measured is the speed of a model of
that shape. The tokenizer (and chat template) is copied from an installed model, and the output
rows of its end-of-sequence tokens and of ids past its vocabulary are zero, so that greedy
decoding never picks them: every side of a comparison generates exactly the tokens asked for.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tholos_mlx.errors import UsageError
from tholos_mlx.home import write_atomic

GROUP_SIZE = 64
BITS = 4
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class Shape:
    """A llama's dimensions; vocab None means the tokenizer's own size."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int | None
    tied: bool
    context: int
    rope_theta: float


# Llama 3.2 1B and 3B, Llama 3.1 8B (their published config.json); tiny is for tests.
SHAPES: dict[str, Shape] = {
    "tiny": Shape(64, 2, 128, 4, 2, 16, None, True, 8192, 10000.0),
    "llama-1b": Shape(2048, 16, 8192, 32, 8, 64, 128256, True, 131072, 500000.0),
    "llama-3b": Shape(3072, 28, 8192, 24, 8, 128, 128256, True, 131072, 500000.0),
    "llama-8b": Shape(4096, 32, 14336, 32, 8, 128, 128256, False, 131072, 500000.0),
}


def config(name: str, vocab: int, tokenizer_from: str) -> dict[str, Any]:
    """The config.json of a synthetic model: mlx-lm's llama with 4-bit quantization."""
    s = SHAPES[name]
    return {
        "model_type": "llama",
        "hidden_size": s.hidden,
        "num_hidden_layers": s.layers,
        "intermediate_size": s.intermediate,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": s.context,
        "rope_theta": s.rope_theta,
        "tie_word_embeddings": s.tied,
        "quantization": {"group_size": GROUP_SIZE, "bits": BITS},
        "synthetic": {"shape": name, "weights": "random", "tokenizer_from": tokenizer_from},
    }


def build(name: str, tokenizer_from: Path, folder: Path, seed: int = 0) -> Path:
    """Write a random-weight 4-bit model of shape `name` into the new folder `folder`."""
    if name not in SHAPES:
        raise UsageError(f"--synthetic {name}: choose one of {', '.join(SHAPES)}")
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from tholos_mlx.bench.sides.raw import load_tokenizer

    folder.mkdir(parents=True)
    for file in TOKENIZER_FILES:
        if (tokenizer_from / file).is_file():
            shutil.copy2(tokenizer_from / file, folder / file)
    tokenizer = load_tokenizer(folder)
    words = len(tokenizer.get_vocab())  # added tokens included
    vocab = SHAPES[name].vocab or words
    if vocab < words:
        raise UsageError(f"the tokenizer has {words} tokens, more than {name}'s {vocab}")
    cfg = config(name, vocab, tokenizer_from.name)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))  # type: ignore[no-untyped-call]
    model.set_dtype(mx.bfloat16)
    _silence(model, sorted(tokenizer.eos_token_ids), words, vocab)
    nn.quantize(model, group_size=GROUP_SIZE, bits=BITS)  # type: ignore[attr-defined]
    for layer in model.layers:  # a layer at a time: never the whole float model in memory
        mx.eval(layer.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    write_atomic(folder / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())
    return folder


def _silence(model: Any, eos: list[int], words: int, vocab: int) -> None:
    """Zero the output rows of EOS and of ids past the tokenizer: greedy never picks them."""
    import mlx.core as mx

    head = model.lm_head if hasattr(model, "lm_head") else model.model.embed_tokens
    keep = mx.ones((vocab, 1), dtype=head.weight.dtype)
    keep[words:] = 0
    for i in eos:
        if i < vocab:
            keep[i] = 0
    head.weight = head.weight * keep
