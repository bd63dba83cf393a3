"""A Hugging Face `tokenizers` tokenizer rebuilt from a GGUF file's vocabulary metadata."""

from __future__ import annotations

import logging
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from tholos_mlx.errors import UsageError

log = logging.getLogger("tholos.gguf")

# llama_token_type (llama.h): what each entry of tokenizer.ggml.token_type means.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> how the text is split before BPE; the regexes are those of the original
# tokenizer.json files that llama.cpp's llama-vocab.cpp names for each pre-tokenizer type.
_PRE_SPLIT: dict[str, str] = {
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "dbrx": _LLAMA3,
    "smaug-bpe": _LLAMA3,
    "qwen2": _QWEN2,
    "stablelm2": _QWEN2,
    "tekken": _TEKKEN,
}
_PRE_DIGITS = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_PRE_GPT2 = {"gpt2", "default", "mpt", "olmo", "jais"}


def _tokens(meta: dict[str, Any]) -> tuple[list[str], list[int]]:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise UsageError("the GGUF file carries no tokenizer vocabulary (tokenizer.ggml.tokens)")
    types = meta.get("tokenizer.ggml.token_type")
    if not isinstance(types, list) or len(types) != len(tokens):
        types = [NORMAL] * len(tokens)
    return tokens, [int(t) for t in types]


def _token(tokens: list[str], meta: dict[str, Any], key: str) -> str | None:
    idx = meta.get(f"tokenizer.ggml.{key}_token_id")
    if isinstance(idx, int) and 0 <= idx < len(tokens):
        return tokens[idx]
    return None


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in _PRE_SPLIT:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_PRE_SPLIT[pre]), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(
                    add_prefix_space=False, trim_offsets=True, use_regex=False
                ),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _PRE_DIGITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre not in _PRE_GPT2:
        # A wrong split only changes how some text is cut into tokens; the model still works.
        log.warning("unknown tokenizer.ggml.pre %r: splitting text the GPT-2 way", pre)
    return byte_level


def _bpe(meta: dict[str, Any], tokens: list[str]) -> Tokenizer:
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or not merges:
        raise UsageError("the GGUF file's BPE tokenizer has no merges (tokenizer.ggml.merges)")
    pairs: list[tuple[str, str]] = []
    for m in merges:
        left, sep, right = str(m).partition(" ")
        if sep:
            pairs.append((left, right))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "gpt2")))
    tok.decoder = decoders.ByteLevel()
    return tok


def _spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges from SentencePiece scores, as transformers' SentencePieceExtractor makes them."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found: list[tuple[str, str, float]] = []
    for piece, score in zip(tokens, scores):
        local = [
            (piece[:i], piece[i:], score)
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        found.extend(local)
    found.sort(key=lambda x: x[2], reverse=True)  # stable: ties keep vocabulary order
    return [(a, b) for a, b, _ in found]


def _spm(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    scores = meta.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens):
        raise UsageError(
            "the GGUF file's SentencePiece tokenizer has no scores (tokenizer.ggml.scores)"
        )
    if BYTE not in types:
        raise UsageError(
            "SentencePiece vocabularies without byte tokens (<0x00>...) are not supported"
        )
    unk = _token(tokens, meta, "unknown") or next(
        (t for t, k in zip(tokens, types) if k == UNKNOWN), None
    )
    vocab = {t: i for i, t in enumerate(tokens)}
    model = models.BPE(
        vocab=vocab,
        merges=_spm_merges(tokens, [float(s) for s in scores]),
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = Tokenizer(model)
    # llama.cpp puts a space before the text and after every special token (the "legacy"
    # SentencePiece behaviour); a normalizer that prepends does the same to each segment.
    steps: list[normalizers.Normalizer] = []
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    if prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(steps)
    parts: list[decoders.Decoder] = [
        decoders.Replace("▁", " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
    ]
    if prefix:
        parts.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(parts)
    return tok


def build(meta: dict[str, Any], max_length: int | None) -> tuple[Tokenizer, dict[str, Any]]:
    """The tokenizer and the tokenizer_config.json contents for a GGUF file's metadata."""
    kind = meta.get("tokenizer.ggml.model")
    tokens, types = _tokens(meta)
    if kind not in ("gpt2", "llama"):
        raise UsageError(
            f"tokenizer type {kind!r} is not supported; supported: 'gpt2' (byte-level BPE), "
            "'llama' (SentencePiece)"
        )
    try:
        tok = _bpe(meta, tokens) if kind == "gpt2" else _spm(meta, tokens, types)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception on a bad vocabulary
        text = str(exc).strip().splitlines()
        raise UsageError(
            f"the GGUF file's tokenizer is inconsistent: {text[0] if text else exc!r}"
        ) from None
    # Special tokens match before the model sees the text, and decode as written.
    added = [
        AddedToken(t, special=k in (CONTROL, UNKNOWN), normalized=False)
        for t, k in zip(tokens, types)
        if k in (CONTROL, USER_DEFINED) or (k == UNKNOWN and kind == "llama")
    ]
    tok.add_tokens([a for a in added if not a.special])
    tok.add_special_tokens([a for a in added if a.special])

    # llama.cpp adds BOS by default for SentencePiece vocabularies and not for BPE ones.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    bos, eos = _token(tokens, meta, "bos"), _token(tokens, meta, "eos")
    _post_processor(tok, kind, bos if add_bos else None, eos if add_eos else None)

    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": _token(tokens, meta, "unknown"),
        "pad_token": _token(tokens, meta, "padding"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length or 1_000_000,
    }
    cfg = {k: v for k, v in cfg.items() if v is not None}
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template:
        cfg["chat_template"] = template
    else:
        log.warning("the GGUF file has no chat template (tokenizer.chat_template)")
    return tok, cfg


def _post_processor(tok: Tokenizer, kind: object, bos: str | None, eos: str | None) -> None:
    """BOS/EOS around encoded text, as the GGUF's add_bos_token/add_eos_token ask."""
    steps: list[processors.PostProcessor] = []
    if kind == "gpt2":
        steps.append(processors.ByteLevel(trim_offsets=False))
    if bos or eos:
        ends = [t for t in (bos, eos) if t]
        # List templates, so a token with a space in it stays one piece.
        single = [bos] * bool(bos) + ["$A"] + [eos] * bool(eos)
        pair = single + [f"{bos}:1"] * bool(bos) + ["$B:1"] + [f"{eos}:1"] * bool(eos)
        steps.append(
            processors.TemplateProcessing(
                single=single,
                pair=pair,
                special_tokens=[(t, tok.token_to_id(t)) for t in ends],
            )
        )
    if len(steps) == 1:
        tok.post_processor = steps[0]
    elif steps:
        tok.post_processor = processors.Sequence(steps)
