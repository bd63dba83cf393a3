"""Reusable KV caches keyed by token prefix, least recently used first out, within a byte budget."""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence


def cache_tokens(cache: Sequence[Any]) -> int | None:
    """How many tokens a model's per-layer cache holds, or None if it cannot say."""
    offsets = {getattr(c, "offset", None) for c in cache}
    if len(offsets) != 1:
        return None
    (offset,) = offsets
    return offset if isinstance(offset, int) else None


def kv_prefix(layer: Any, n: int) -> Any | None:
    """A plain KV layer cut to its first n tokens, without the room MLX grows buffers by.

    The slices share memory with `layer` until the new layer's next token, which grows it into
    a buffer of its own (mlx-lm's KVCache concatenates when full), so the source is never
    written through it. None for layers of other kinds."""
    from mlx_lm.models.cache import KVCache  # here: the HTTP side imports this module, no MLX

    keys: Any = getattr(layer, "keys", None)
    if type(layer) is not KVCache or keys is None:
        return None
    small: Any = KVCache()  # type: ignore[no-untyped-call]
    values: Any = layer.values
    small.state = (keys[..., :n, :], values[..., :n, :], n)
    return small


def cache_bytes(cache: Sequence[Any]) -> int:
    """Memory a cache holds, as its layers report it."""
    return sum(int(getattr(c, "nbytes", 0) or 0) for c in cache)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    cache: list[Any]
    nbytes: int


class PromptCache:
    """Caches of earlier prompts; take() hands out a cache no stored entry shares."""

    def __init__(self, budget_bytes: int, least: Callable[[int], int] | None = None) -> None:
        self.budget_bytes = budget_bytes
        # Across ranks: the smallest of every rank's number. Each rank's own memory evicts its
        # own entries, so their caches may differ; they must reuse the same prefix.
        self._least = least
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by every entry together."""
        return sum(e.nbytes for e in self._entries.values())

    def entries(self) -> list[tuple[tuple[int, ...], list[Any]]]:
        """Every entry's tokens and cache, least recently used first (for the disk cache)."""
        return [(e.tokens, e.cache) for e in self._entries.values()]

    def shrink(self, max_bytes: int) -> None:
        """Evict least recently used entries until they hold at most max_bytes (memory guard)."""
        total = self.nbytes
        while total > max(max_bytes, 0) and self._entries:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes

    def clear(self) -> None:
        """Drop every entry (on model switch): their arrays are freed with them."""
        self._entries.clear()

    def take(self, prompt: Sequence[int]) -> tuple[list[Any] | None, int]:
        """The cache covering the longest stored prefix of prompt (never all of it), and its length.

        Across ranks, the prefix every rank holds: a longer one is trimmed to it, or dropped
        (by all) when a rank cannot trim its own."""
        cache, n = self._take(prompt)
        if self._least is None:
            return cache, n
        agreed = self._least(n)
        if cache is not None and agreed == 0:
            self.put(prompt[:n], cache)  # another rank has nothing: keep ours for later
            cache = None
        elif cache is not None and agreed < n:
            if all(c.is_trimmable() for c in cache):
                for c in cache:
                    c.trim(n - agreed)
            else:
                cache = None
        ok = self._least(int(cache is not None or agreed == 0))
        if not ok or agreed == 0:
            return None, 0
        return cache, agreed

    def _take(self, prompt: Sequence[int]) -> tuple[list[Any] | None, int]:
        best_key, best_len = None, 0
        limit = len(prompt) - 1  # the last prompt token must be computed to get logits
        for key, entry in self._entries.items():
            n = min(_common_prefix(entry.tokens, prompt), limit)
            if n > best_len:
                best_key, best_len = key, n
        if best_key is None:
            return None, 0
        entry = self._entries[best_key]
        if best_len == len(entry.tokens):
            # The whole entry is a prefix: hand it over; the request will store it back, longer.
            del self._entries[best_key]
            return entry.cache, best_len
        if not all(c.is_trimmable() for c in entry.cache):
            return None, 0
        # Part of the entry matches: copy only that part, so the stored one stays whole for its
        # own conversation and the copy costs the shared prefix, not the whole entry.
        self._entries.move_to_end(best_key)
        cut = [kv_prefix(c, best_len) for c in entry.cache]
        if all(c is not None for c in cut):
            return cut, best_len
        cache = copy.deepcopy(entry.cache)
        excess = len(entry.tokens) - best_len
        for c in cache:
            c.trim(excess)
        return cache, best_len

    def put(self, tokens: Sequence[int], cache: list[Any]) -> None:
        """Store a cache for these tokens, dropping entries it makes redundant, then evicting LRU."""
        if not tokens or self.budget_bytes <= 0:
            return
        nbytes = cache_bytes(cache)
        if nbytes > self.budget_bytes:
            return  # checked first: an entry that cannot be stored must not drop its prefixes
        key_tokens = tuple(tokens)
        for key in [k for k, e in self._entries.items() if key_tokens[: len(e.tokens)] == e.tokens]:
            del self._entries[key]  # a prefix of the new entry: the new one serves it too
        self._entries[self._next] = _Entry(key_tokens, cache, nbytes)
        self._next += 1
        total = self.nbytes
        while total > self.budget_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes
