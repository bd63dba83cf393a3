"""A tiny llama with a 128k context that answers one fixed sentence: agents' long prompts fit, answers end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import DEMO_ID

LONG_ID = "long-llama"
LONG_CONTEXT = 131072
ANSWER = "The note says the meeting moved."  # what the long model answers, whatever it is asked
NEWLINE = "Ċ"  # the last token of the demo template's generation prompt, `<|im_start|>assistant\n`
EOS = 2  # <|im_end|>
MARGIN = 100.0  # a logit lead no sampling temperature an agent sends can overturn


def write_long_context_model(folder: Path, tokenizer_from: Path) -> Path:
    """A tiny llama with a 128k context and the demo tokenizer that always answers ANSWER, then ends.

    Random weights would write until max_tokens (Claude Code asks for 32,000). Here attention and
    the MLP add nothing, so the next token depends on the current one alone: each token of
    ANSWER has its own embedding direction, which the output head maps to the token after it;
    the generation prompt's last token (the newline after `assistant`) leads to the first, and
    every other token leads to the end of the answer.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer

    from tests.tiny_model import model_args

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    vocab = int(json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    chain = [tokenizer.token_to_id(NEWLINE), *tokenizer.encode(ANSWER).ids]
    hidden = 16
    assert len(set(chain)) == len(chain) < hidden, "each state needs a direction of its own"
    config = {
        **model_args(vocab),
        "max_position_embeddings": LONG_CONTEXT,
        # Smaller still than the fast lane's: agents' 20k-token prompts prefill on a shared CPU.
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
        "eos_token_id": [0, EOS],  # SmolLM2's <|endoftext|> and <|im_end|>
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))
    end = hidden - 1  # the direction of every token outside the chain
    embed = mx.zeros((vocab, hidden)).at[:, end].add(1.0)
    head = mx.zeros((vocab, hidden)).at[EOS, end].add(MARGIN)
    for state, token in enumerate(chain):
        embed = embed.at[token, end].add(-1.0).at[token, state].add(1.0)
        after = chain[state + 1] if state + 1 < len(chain) else EOS
        head = head.at[after, state].add(MARGIN)
    model.model.embed_tokens.weight = embed
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
        layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
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
