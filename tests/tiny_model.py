"""A tiny random-weight llama and a small byte-level BPE tokenizer, made on the spot: the fast lane's model.

Nothing is downloaded: the tokenizer is trained here on a few lines of text (every byte stays
encodable, as in the demo model's tokenizer), with the demo model's ChatML template and special
tokens, and the weights are random. Tests that need the real model's answers live in tests/e2e/.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_ID = "tiny-llama"
TINY_TIER = "fast"
VOCAB = 512  # small enough to write in milliseconds, large enough to merge common words
CONTEXT = 4096
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
EOS_ID = 2
THINK = ["<think>", "</think>"]  # added by write_tokenizer(thinking=True)
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# What the tests write and the grammars must spell: prose, JSON, tool-call and thinking tags.
CORPUS = [
    "Tell me something. The capital of France is Paris. Count to 10: 1, 2, 3, 4, 5.",
    "Hello, world! Say hi. What is the weather like today in London?",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"ok": true, "answer": 42, "items": [1, 2, 3], "text": "hello", "none": null}',
    "<tool_call>\n</tool_call>\n<think>\nhmm, JSON.</think>\n",
    "Café, naïve, déjà vu, 你好, 🙂 👍 — the quick brown fox jumps over the lazy dog.",
    "def main():\n    return {'key': 'value'}\n",
    "system\nYou are a helpful assistant.\nuser\nCount on.\nassistant\nRun 3f9a0c1d\n",
    "Answer in two sentences at most, politely and plainly. When are you open on Saturday?",
]


def write_tokenizer(folder: Path, thinking: bool = False) -> None:
    """tokenizer.json and tokenizer_config.json as transformers and mlx-lm read them.

    thinking: <think> and </think> are tokens of their own and the template opens a thinking
    block for the answer, as Qwen3's does (mlx-lm then sets has_thinking).
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if thinking:
        tok.add_tokens([AddedToken(t, special=False) for t in THINK])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONTEXT,
        "chat_template": TEMPLATE.replace("assistant\\n' }}", "assistant\\n<think>\\n' }}")
        if thinking
        else TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def model_args(vocab: int) -> dict[str, object]:
    """The config.json of a two-layer llama small enough to run a step in a millisecond."""
    return {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": CONTEXT,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": EOS_ID,
    }


def write_model(folder: Path, seed: int = 0) -> Path:
    """An MLX model folder mlx_lm.load() reads: config.json, random weights, the tokenizer."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    write_tokenizer(folder)
    vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    config = model_args(vocab)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_home(home: Path) -> Path:
    """A THOLOS_HOME with the tiny model installed as TINY_ID, tier TINY_TIER."""
    write_model(home / "models" / TINY_ID)
    (home / "tiers.toml").write_text(
        f'[models.{TINY_ID}]\npath = "models/{TINY_ID}"\ntier = "{TINY_TIER}"\n'
    )
    return home
