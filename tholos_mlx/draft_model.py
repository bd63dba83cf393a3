"""A small model that drafts for a large one (`serve --speculative draft --draft-model ID`).

It must share the large model's tokenizer (same_vocabulary checks): its drafts are token ids.
It drafts greedily from its own KV cache, which follows the answer: before each draft the
cache is trimmed back to what the large model kept, and fed what it has not seen, so the two
caches stay in step. Runs on the engine thread, like every MLX call.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import mlx.core as mx
from mlx_lm import load as mlx_load
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from tholos_mlx.model_slot import (
    ModelSlot,
    model_kv_bytes_per_token,
    read_config,
    weights_bytes,
    widest_float_bytes,
)
from tholos_mlx.tiers import ModelEntry

log = logging.getLogger("tholos.engine")

CHUNK = 512  # prompt tokens per forward pass when the draft model catches up


def same_vocabulary(tokenizer: Any, other: Any) -> bool:
    """Whether two tokenizers map every token to the same id (a draft's ids mean the same)."""
    mine: dict[str, int] = tokenizer.get_vocab()
    theirs: dict[str, int] = other.get_vocab()
    return mine == theirs


class DraftSlot:
    """The draft model of `--speculative draft`: loaded on the engine thread at first use, then
    held beside whichever model answers (the memory guard counts its weights and its KV cache)
    until that model is unloaded (idle unload, a switch): then it goes too, and comes back with
    the next answer."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self._model: Any = None
        self._tokenizer: Any = None
        self._fits: dict[int, bool] = {}  # by the answering tokenizer's id(): same vocabulary?

    def for_answer(self, slot: ModelSlot, tokenizer: Any) -> DraftModel | None:
        """A drafter for one answer of the model with this tokenizer; None where the draft
        model's vocabulary is another (its ids would be other tokens)."""
        if self._model is None:
            self._model, self._tokenizer = mlx_load(str(self.entry.path))[:2]
            slot.beside_bytes = weights_bytes(self.entry.path)
            slot.beside_kv_per_token = model_kv_bytes_per_token(
                self._model, read_config(self.entry.path), widest_float_bytes(self._model), None
            )
            slot.release_beside = self.release
            log.info("loaded draft model %s", self.entry.id)
        fits = self._fits.get(id(tokenizer))
        if fits is None:
            fits = self._fits[id(tokenizer)] = same_vocabulary(tokenizer, self._tokenizer)
        return DraftModel(self._model) if fits else None

    def release(self) -> None:
        """Let the draft model go (its memory returns when the slot clears MLX's cache)."""
        if self._model is not None:
            log.info("unloaded draft model %s", self.entry.id)
        self._model = self._tokenizer = None
        self._fits.clear()


class DraftModel:
    """One answer's drafter: the small model and its cache, which holds `fed`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: list[Any] = make_prompt_cache(model)
        self.fed: list[int] = []  # exactly the tokens in self.cache

    def draft(self, history: list[int], depth: int) -> list[int]:
        """The small model's greedy continuation of `history`, `depth` tokens long."""
        if depth <= 0 or not history:
            return []
        self._rewind(history)
        tail = history[len(self.fed) :]
        while len(tail) > CHUNK:  # catch up on a long prompt in bounded passes
            self._feed(tail[:CHUNK])
            tail = tail[CHUNK:]
        logits = self._feed(tail)
        drafted: list[int] = []
        while True:
            token = cast(int, mx.argmax(logits[:, -1, :], axis=-1).item())
            drafted.append(token)
            if len(drafted) == depth:
                return drafted
            logits = self._feed([token])

    def _rewind(self, history: list[int]) -> None:
        """Trim the cache to the longest prefix it shares with `history`, less one token: the
        last one is fed again, for the logits the first draft token comes from."""
        common = 0
        for a, b in zip(self.fed, history, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(history) - 1)
        if common == len(self.fed):
            return
        if can_trim_prompt_cache(self.cache):
            trim_prompt_cache(self.cache, len(self.fed) - common)
            del self.fed[common:]
        else:  # layers that cannot trim: start over
            self.cache = make_prompt_cache(self.model)
            self.fed = []

    def _feed(self, tokens: list[int]) -> mx.array:
        logits: mx.array = self.model(mx.array(tokens, dtype=mx.uint32)[None], cache=self.cache)
        self.fed.extend(tokens)
        return logits
