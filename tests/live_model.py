"""Tiny llamas (128k context, the demo tokenizer) that call one tool, then answer once its result is in.

Like tests/long_model.py, each token's next is read from its own embedding direction, so the
model writes a fixed tool call on its first turn. One attention head gives it the little state a
second turn needs: it looks for MARKER, a word that only the tool's result holds (the file the
agent reads says it); once MARKER is anywhere in the prompt, the head adds a "done" direction
that turns the model to DONE_ANSWER instead of the call, so the agent's loop ends by itself.

A token can be followed by different tokens in the call (`_` in `<tool_call>` and in
`file_path`): its successors are ranked, and the grammar of the call masks the ones that do
not fit, so the best-ranked one that fits is written. Weights are made in the test; nothing is
downloaded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.long_model import EOS, LONG_CONTEXT, MARGIN, NEWLINE

MARKER = " flamingo"  # in the file the agent reads, and in neither agent's own prompt
MARKER_LINE = "The flamingo is pink."  # the file's unique content
DONE_ANSWER = "It says pink"  # what the model answers once the tool's result is in
READ_ID = "live-read"  # calls Claude Code's Read on notes.txt
READ_CALL = '<tool_call>{"name":"Read","arguments":{"file_path":"notes.txt"}}</tool_call>'
SHELL_ID = "live-shell"  # calls Codex's exec_command with `cat notes.txt`
SHELL_CALL = '<tool_call>{"name":"exec_command","arguments":{"cmd":"cat notes.txt"}}</tool_call>'
HIDDEN = 64
ROTARY_SLOW = HIDDEN // 2 - 1  # the rotary pair that barely turns: attention ignores distance
SCORE = 40.0  # attention logit of MARKER: all of the head's weight, in any prompt length


def write_live_model(
    folder: Path, tokenizer_from: Path, call: str, first: Sequence[tuple[str, str]] = ()
) -> Path:
    """A model that writes `call` (the server's default tool-call format) while MARKER is
    absent from its prompt, and DONE_ANSWER once it is there.

    `first`: (token, next) pairs ranked first among that token's successors, where the call's
    own order would put a successor the grammar allows in the wrong place (a value may be any
    string, a tool's name may not)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer

    from tests.tiny_model import model_args

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    vocab = int(json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    newline = _token(tok, NEWLINE)
    calling = [newline, *tok.encode(call).ids]
    answer = tok.encode(DONE_ANSWER).ids
    (marker,) = tok.encode(MARKER).ids[:1]
    assert not set(answer) & set(calling), "the answer's states must be its own"
    assert marker not in calling and marker not in answer
    states = sorted(set(calling) | set(answer))
    end, mark, done = len(states), len(states) + 1, len(states) + 2
    assert done < HIDDEN, "each state needs a direction of its own"
    direction = {t: i for i, t in enumerate(states)}
    config = {
        **model_args(vocab),
        "max_position_embeddings": LONG_CONTEXT,
        "rope_theta": 1e9,  # the slowest rotary pair turns < 1e-3 rad over 128k positions
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "intermediate_size": 32,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "tie_word_embeddings": False,
        "eos_token_id": [0, EOS],
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    embed = mx.zeros((vocab, HIDDEN)).at[:, end].add(1.0)
    for token, i in direction.items():
        embed = embed.at[token, end].add(-1.0).at[token, i].add(1.0)
    embed = embed.at[marker, end].add(-1.0).at[marker, mark].add(1.0)
    head = mx.zeros((vocab, HIDDEN)).at[EOS, end].add(MARGIN)
    successors: dict[int, list[int]] = {}
    for a, b in zip(calling, [*calling[1:], EOS], strict=True):
        found = successors.setdefault(a, [])
        if b not in found:
            found.append(b)
    for a_text, b_text in first:
        a, b = _token(tok, a_text), _token(tok, b_text)
        successors[a].remove(b)
        successors[a].insert(0, b)
    for a, found in successors.items():
        for rank, b in enumerate(found):  # 100, 50, 25, ...: the grammar picks among these
            head = head.at[b, direction[a]].add(MARGIN / 2**rank)
    # Once MARKER has been seen: the newline leads to the answer, which runs to its end.
    head = head.at[answer[0], done].add(2 * MARGIN)
    for a, b in zip(answer, [*answer[1:], EOS], strict=True):
        head = head.at[b, direction[a]].add(3 * MARGIN)
    model.model.embed_tokens.weight = embed
    layer = model.model.layers[0]
    scale = HIDDEN**-0.5  # the input norm scales a one-hot embedding by sqrt(HIDDEN)
    attn = layer.self_attn
    # Every token asks the same question; only MARKER answers, with the "done" direction.
    attn.q_proj.weight = mx.zeros_like(attn.q_proj.weight).at[ROTARY_SLOW, :].add(scale)
    key = SCORE * HIDDEN**0.5  # sdpa divides by sqrt(head_dim)
    attn.k_proj.weight = mx.zeros_like(attn.k_proj.weight).at[ROTARY_SLOW, mark].add(key * scale)
    attn.v_proj.weight = mx.zeros_like(attn.v_proj.weight).at[0, mark].add(scale)
    attn.o_proj.weight = mx.zeros_like(attn.o_proj.weight).at[done, 0].add(1.0)
    layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    model.lm_head.weight = head
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _token(tok: Any, text: str) -> int:
    """The id of a token given as the vocabulary spells it (`Ċ`, `":"`)."""
    found = tok.token_to_id(text)
    assert isinstance(found, int), f"{text!r} is not one token of the demo vocabulary"
    return found


def write_live_models(models: Path, tokenizer_from: Path) -> dict[str, str]:
    """READ_ID and SHELL_ID under `models`; their tiers.toml lines."""
    write_live_model(models / READ_ID, tokenizer_from, READ_CALL, first=[('":"', "notes")])
    write_live_model(models / SHELL_ID, tokenizer_from, SHELL_CALL, first=[('":"', "cat")])
    return {
        READ_ID: f'[models.{READ_ID}]\npath = "models/{READ_ID}"\n',
        SHELL_ID: f'[models.{SHELL_ID}]\npath = "models/{SHELL_ID}"\n',
    }
