#!/usr/bin/env python3
"""Does decoding write the KV cache in place, and what does a token cost as the context grows?

Issue 14 item 4: through the server, decode after a 2048-token prompt ran at 0.88 of raw mlx-lm's
rate on a GPU. One suspect grows with context on every token: mlx-lm's KVCache writes each new
key and value into its buffer with a slice assignment, which MLX does in place only when nothing
else holds that buffer; otherwise it copies the whole buffer, every token. This module checks
where the buffer lives after each decoded token (a move between two tokens that did not grow the
cache is such a copy), on each path by which a cache reaches the generation loop, and times
tokens by context:

    .venv/bin/python scripts/kv_probe.py FOLDER [--contexts 32,512,2048] [--tokens 32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache

from tholos_mlx.prompt_cache import PromptCache, cache_tokens


@dataclass(frozen=True)
class Decoded:
    """One decode run: the cache's first-layer key buffer after each token, and the token times."""

    addresses: list[int]
    capacities: list[int]
    seconds: list[float]

    @property
    def copies(self) -> int:
        """Tokens after which the buffer moved although its capacity did not change."""
        pairs = zip(self.addresses, self.addresses[1:], self.capacities, self.capacities[1:])
        return sum(1 for a, b, ca, cb in pairs if a != b and ca == cb)

    @property
    def ms_per_token(self) -> float:
        """Median time between two tokens, in milliseconds."""
        gaps = [b - a for a, b in zip(self.seconds, self.seconds[1:])]
        return statistics.median(gaps) * 1e3


def _address(a: mx.array) -> int:
    """Where an evaluated array's data lives (CPU memory; Metal's unified memory too)."""
    import numpy as np

    # bfloat16 has no buffer format: read the same bytes as uint16 (MLX's view shares the data).
    same = a.view(mx.uint16) if a.dtype == mx.bfloat16 else a
    mx.eval(same)
    view = np.array(same, copy=False)  # the buffer itself; both dropped at once: they hold it
    address = int(view.ctypes.data)
    del view, same
    return address


def decode(
    model: Any,
    prompt: list[int],
    cache: list[Any],
    tokens: int,
    hold: bool = False,
    prefill_step: int = 2048,
) -> Decoded:
    """Decode `tokens` tokens greedily after `prompt` with `cache`, as stream_generate does.

    `hold` keeps a one-token slice of the key buffer across each step: the careless reference
    that forces a copy, to show that the probe sees one.
    """
    addresses, capacities, stamps = [], [], []
    held: list[mx.array] = []
    steps: Iterator[Any] = generate_step(
        mx.array(prompt),
        model,
        max_tokens=tokens,
        prompt_cache=cache,
        prefill_step_size=prefill_step,
    )
    for _ in steps:
        stamps.append(time.perf_counter())
        keys = cache[0].keys
        mx.eval(keys)
        addresses.append(_address(keys))
        capacities.append(int(keys.shape[2]))
        if hold:
            held[:] = [keys[..., :1, :]]
            mx.eval(held)
    return Decoded(addresses, capacities, stamps)


CachePath = Callable[[Any, list[int], int], Decoded]


def fresh(model: Any, prompt: list[int], tokens: int) -> Decoded:
    """A new cache filled by this prompt: raw mlx-lm, and the server with its cache off."""
    return decode(model, prompt, make_prompt_cache(model), tokens)


def chunked(model: Any, prompt: list[int], tokens: int) -> Decoded:
    """A new cache filled 64 prompt tokens at a time, as the server's engine does on a CPU."""
    return decode(model, prompt, make_prompt_cache(model), tokens, prefill_step=64)


def handed_over(model: Any, prompt: list[int], tokens: int) -> Decoded:
    """A stored cache whose tokens all begin the prompt: PromptCache hands that very cache over."""
    store, stored = _stored(model, prompt[:-1], tokens)
    follow_up = stored + prompt[-1:]  # the earlier conversation, one token further
    got, n = store.take(follow_up)
    assert got is not None and n == len(stored), "the whole stored cache should be handed over"
    return decode(model, follow_up[n:], got, tokens)


def copied(model: Any, prompt: list[int], tokens: int) -> Decoded:
    """A stored cache that shares only part of the prompt: PromptCache copies that part of it."""
    store, _ = _stored(model, prompt, tokens)
    other = prompt[:-1] + [prompt[-1] + 1]  # the same prompt but its last token
    got, n = store.take(other)
    assert got is not None and n == len(prompt) - 1, "the shared prefix should be found"
    return decode(model, other[n:], got, tokens)


def _stored(model: Any, prompt: list[int], tokens: int) -> tuple[PromptCache, list[int]]:
    """A PromptCache holding one earlier request's cache, as the engine keeps it; its tokens."""
    cache = make_prompt_cache(model)
    decode(model, prompt, cache, tokens)
    held = cache_tokens(cache) or 0
    stored = (list(prompt) + [7] * tokens)[:held]  # the answer's ids do not matter here
    store = PromptCache(1 << 40)
    store.put(stored, cache)
    return store, stored


PATHS: dict[str, CachePath] = {
    "fresh": fresh,
    "chunked prefill": chunked,
    "handed over": handed_over,
    "copied+trimmed": copied,
}


def prompt_of(n: int, seed: int = 0) -> list[int]:
    """n token ids that no template produced: plain numbers in the common part of any vocabulary."""
    rng = random.Random(seed + n)
    return [rng.randrange(100, 20000) for _ in range(n)]


def main() -> None:
    """Print, per context and cache path, ms per token and buffer copies per run."""
    p = argparse.ArgumentParser(prog="scripts/kv_probe.py")
    p.add_argument("folder", help="an MLX model folder (e.g. one --synthetic built)")
    p.add_argument("--contexts", default="32,512,2048")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from mlx_lm import load

    model = load(args.folder)[0]
    for n in (int(x) for x in args.contexts.split(",")):
        fresh(model, prompt_of(n), 4)  # warm-up for this size
        row = []
        for name, path in PATHS.items():
            runs = [path(model, prompt_of(n, r), args.tokens) for r in range(args.repeats)]
            ms = statistics.median(r.ms_per_token for r in runs)
            row.append(f"{name} {ms:7.2f} ms/token, {max(r.copies for r in runs)} copies")
        print(f"context {n:>6}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
