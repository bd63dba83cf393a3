"""Unit tests of tholos_mlx.prompt_cache with tiny fake per-layer caches (no model, no MLX)."""

from __future__ import annotations

from typing import Any

from tholos_mlx.prompt_cache import PromptCache, cache_bytes, cache_tokens

LAYERS = 2
LAYER_BYTES = 50  # so one cached prompt is 100 bytes


class FakeLayer:
    """One layer's KV cache as PromptCache sees it: offset, nbytes, is_trimmable(), trim()."""

    def __init__(self, offset: int, nbytes: int = LAYER_BYTES, trimmable: bool = True) -> None:
        self.offset = offset
        self.nbytes = nbytes
        self.trimmable = trimmable

    def is_trimmable(self) -> bool:
        return self.trimmable

    def trim(self, n: int) -> int:
        n = min(n, self.offset)
        self.offset -= n
        return n


def kv(tokens: list[int], nbytes: int = LAYER_BYTES, trimmable: bool = True) -> list[Any]:
    """A fake model cache holding exactly these tokens."""
    return [FakeLayer(len(tokens), nbytes, trimmable) for _ in range(LAYERS)]


def offsets(cache: list[Any] | None) -> list[int]:
    assert cache is not None
    return [c.offset for c in cache]


def test_cache_tokens_is_the_common_offset_or_none() -> None:
    assert cache_tokens(kv([1, 2, 3])) == 3
    assert cache_tokens([FakeLayer(3), FakeLayer(4)]) is None
    assert cache_tokens([]) is None
    assert cache_tokens([object()]) is None


def test_cache_bytes_sums_what_the_layers_report() -> None:
    assert cache_bytes(kv([1, 2])) == LAYERS * LAYER_BYTES
    layer = FakeLayer(1)
    layer.nbytes = None  # type: ignore[assignment]
    assert cache_bytes([layer, object(), FakeLayer(1, 7)]) == 7


def test_an_empty_cache_has_nothing_to_give() -> None:
    pc = PromptCache(1000)
    assert pc.take([1, 2, 3]) == (None, 0)
    assert len(pc) == 0 and pc.nbytes == 0


def test_a_whole_stored_prefix_is_handed_over_and_removed() -> None:
    pc = PromptCache(1000)
    stored = kv([1, 2, 3])
    pc.put([1, 2, 3], stored)
    cache, n = pc.take([1, 2, 3, 4, 5])
    assert cache is stored  # no copy: the request extends it and stores it back
    assert n == 3
    assert len(pc) == 0
    assert pc.take([1, 2, 3, 4, 5]) == (None, 0)


def test_take_picks_the_longest_stored_prefix() -> None:
    pc = PromptCache(1000)
    pc.put([1, 2, 3, 4, 9], kv([1, 2, 3, 4, 9]))
    pc.put([1, 2], kv([1, 2]))  # a whole-entry match, but shorter
    pc.put([7, 7, 7, 7, 7, 7], kv([7] * 6))
    cache, n = pc.take([1, 2, 3, 4, 5])
    assert n == 4
    assert offsets(cache) == [4, 4]  # trimmed to the shared part
    assert len(pc) == 3


def test_never_the_whole_prompt_is_taken_from_the_cache() -> None:
    pc = PromptCache(1000)
    pc.put([1, 2, 3, 4], kv([1, 2, 3, 4]))
    cache, n = pc.take([1, 2, 3, 4])  # the same prompt again: its last token is recomputed
    assert n == 3
    assert offsets(cache) == [3, 3]
    assert len(pc) == 1
    assert pc.take([1]) == (None, 0)  # a one-token prompt has nothing to reuse
    assert pc.take([]) == (None, 0)


def test_a_partial_match_is_a_trimmed_copy_and_the_stored_entry_stays_whole() -> None:
    pc = PromptCache(1000)
    stored = kv([1, 2, 3, 4, 5, 6])
    pc.put([1, 2, 3, 4, 5, 6], stored)
    cache, n = pc.take([1, 2, 3, 9])
    assert n == 3
    assert cache is not stored
    assert cache is not None and all(c is not s for c, s in zip(cache, stored))
    assert offsets(cache) == [3, 3]
    assert offsets(stored) == [6, 6]
    assert len(pc) == 1
    # The stored conversation can still be continued from its whole cache.
    again, m = pc.take([1, 2, 3, 4, 5, 6, 7])
    assert again is stored and m == 6


def test_a_partial_match_of_an_untrimmable_cache_gives_nothing() -> None:
    pc = PromptCache(1000)
    stored = kv([1, 2, 3, 4], trimmable=False)
    pc.put([1, 2, 3, 4], stored)
    assert pc.take([1, 2, 9]) == (None, 0)
    assert len(pc) == 1
    cache, n = pc.take([1, 2, 3, 4, 5])  # a whole-entry match needs no trim
    assert cache is stored and n == 4


def test_put_drops_entries_that_are_prefixes_of_the_new_one() -> None:
    pc = PromptCache(1000)
    pc.put([1, 2], kv([1, 2]))
    pc.put([1, 2, 3], kv([1, 2, 3]))
    pc.put([1, 5], kv([1, 5]))  # a sibling, not a prefix
    pc.put([1, 2, 3, 4], kv([1, 2, 3, 4]))
    assert len(pc) == 2
    assert pc.nbytes == 2 * LAYERS * LAYER_BYTES
    _, n = pc.take([1, 2, 3, 4, 5])
    assert n == 4
    # A shorter new entry does not drop a longer one it is a prefix of.
    pc.put([1, 5, 6, 7], kv([1, 5, 6, 7]))
    pc.put([1, 5, 6], kv([1, 5, 6]))
    assert len(pc) == 2  # [1, 5] was dropped by [1, 5, 6, 7]; [1, 5, 6] joined it


def test_the_least_recently_used_entry_goes_first_when_over_budget() -> None:
    pc = PromptCache(3 * LAYERS * LAYER_BYTES)  # room for three
    a, b, c = [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]
    for tokens in (a, b, c):
        pc.put(tokens, kv(tokens))
    assert len(pc) == 3
    pc.take([1, 1, 1, 9])  # a partial use of `a` makes it recent
    pc.put([4, 4, 4, 4], kv([4, 4, 4, 4]))
    assert len(pc) == 3
    assert pc.nbytes <= pc.budget_bytes
    assert pc.take([2, 2, 2, 2, 2])[1] == 0  # b, the least recent, was evicted
    assert pc.take([1, 1, 1, 1, 1])[1] == 4
    assert pc.take([3, 3, 3, 3, 3])[1] == 4
    assert pc.take([4, 4, 4, 4, 4])[1] == 4


def test_several_evictions_keep_the_total_within_budget() -> None:
    pc = PromptCache(250)
    pc.put([1, 1], kv([1, 1]))  # 100
    pc.put([2, 2], kv([2, 2]))  # 200
    pc.put([3, 3], kv([3, 3], nbytes=100))  # 200 more: both older ones must go
    assert len(pc) == 1
    assert pc.nbytes == 200 <= pc.budget_bytes


def test_an_entry_larger_than_the_budget_is_not_stored() -> None:
    pc = PromptCache(150)
    pc.put([1, 2], kv([1, 2]))
    pc.put([5, 6, 7], kv([5, 6, 7], nbytes=100))  # 200 bytes > 150
    assert len(pc) == 1
    assert pc.take([5, 6, 7, 8]) == (None, 0)
    # Nor does it push out entries it would have replaced.
    pc.put([1, 2, 3], kv([1, 2, 3], nbytes=100))
    assert len(pc) == 1
    assert pc.take([1, 2, 3, 4])[1] == 2


def test_nothing_is_stored_without_tokens_or_budget() -> None:
    pc = PromptCache(1000)
    pc.put([], kv([]))
    assert len(pc) == 0
    off = PromptCache(0)
    off.put([1, 2], kv([1, 2]))
    assert len(off) == 0 and off.take([1, 2, 3]) == (None, 0)


def test_clear_drops_everything() -> None:
    pc = PromptCache(1000)
    pc.put([1, 2], kv([1, 2]))
    pc.put([3, 4], kv([3, 4]))
    pc.clear()
    assert len(pc) == 0 and pc.nbytes == 0
    assert pc.take([1, 2, 3]) == (None, 0)


def test_entries_lists_tokens_and_caches_least_recently_used_first() -> None:
    pc = PromptCache(1000)
    first, second = kv([1, 2]), kv([5, 6])
    pc.put([1, 2], first)
    pc.put([5, 6], second)
    assert pc.entries() == [((1, 2), first), ((5, 6), second)]
    pc.take([1, 2, 9])  # whole prefix: handed over and gone
    assert pc.entries() == [((5, 6), second)]


def test_shrink_evicts_least_recently_used_until_within_the_bytes() -> None:
    pc = PromptCache(1000)
    for start in (1, 10, 20):
        pc.put([start, start + 1], kv([start, start + 1]))  # 100 bytes each
    pc.shrink(250)
    assert [t for t, _ in pc.entries()] == [(10, 11), (20, 21)]
    pc.shrink(200)
    assert len(pc) == 2  # already within: nothing goes
    pc.shrink(-5)
    assert len(pc) == 0


def test_a_partial_match_copies_only_the_shared_prefix_not_the_whole_entry() -> None:
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    layer = KVCache()
    keys = mx.ones((1, 2, 4096, 8))
    layer.update_and_fetch(keys, keys)
    store = PromptCache(1 << 40)
    tokens = list(range(4096))
    store.put(tokens, [layer])
    got, n = store.take(tokens[:100] + [-1])
    assert n == 100 and got is not None
    (copy,) = got
    assert copy.offset == 100 and copy.keys.shape[2] == 100  # not 4096 tokens of room
    before = mx.array(layer.keys[0, 0, :100])
    copy.update_and_fetch(mx.zeros((1, 2, 1, 8)), mx.zeros((1, 2, 1, 8)))
    assert mx.array_equal(layer.keys[0, 0, :100], before)  # the stored entry is untouched
    assert store.take(tokens + [5])[1] == 4096  # and still whole for its own conversation


class OtherRank:
    """`least` as one rank sees it: the other rank's numbers, in the order it gives them."""

    def __init__(self, *theirs: int) -> None:
        self.theirs = list(theirs)
        self.asked: list[int] = []

    def __call__(self, mine: int) -> int:
        self.asked.append(mine)
        return min(mine, self.theirs.pop(0))


def test_across_ranks_a_longer_cached_prefix_is_trimmed_to_what_every_rank_holds() -> None:
    other = OtherRank(4, 1)  # the other rank holds 4 tokens of the prefix, and can use them
    pc = PromptCache(1000, other)
    pc.put([1, 2, 3, 4, 5, 6], kv([1, 2, 3, 4, 5, 6]))
    cache, cached = pc.take([1, 2, 3, 4, 5, 6, 7])
    assert cached == 4 and offsets(cache) == [4, 4]
    assert other.asked == [6, 1]


def test_across_ranks_nothing_is_reused_when_one_rank_has_nothing_and_ours_is_kept() -> None:
    other = OtherRank(0, 1)
    pc = PromptCache(1000, other)
    pc.put([1, 2, 3], kv([1, 2, 3]))
    assert pc.take([1, 2, 3, 4]) == (None, 0)
    assert len(pc) == 1  # stored again for a later request


def test_across_ranks_a_prefix_one_rank_cannot_trim_is_dropped_by_every_rank() -> None:
    other = OtherRank(5, 0)  # the other rank had to drop its cache
    pc = PromptCache(1000, other)
    pc.put([1, 2, 3, 4, 5], kv([1, 2, 3, 4, 5]))
    assert pc.take([1, 2, 3, 4, 5, 6]) == (None, 0)
    assert other.asked == [5, 1]
