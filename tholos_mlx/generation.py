"""The generation loop: prefill in chunks, sample with logits processors and a grammar, emit whole characters.

A plain function over (model, prompt ids, cache, sampler, processors, constraint, emit): it runs
on whichever thread calls it (the engine thread in the server, the main thread in tests), owns
no state between calls, and reports exactly which tokens its KV cache now holds, so the caller
can keep that cache for the next prompt that shares its prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import mlx.core as mx
from mlx_lm.models.cache import KVCache, can_trim_prompt_cache, trim_prompt_cache

from tholos_mlx.detokenize import Detokenizer
from tholos_mlx.drafting import Speculation

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
"""mlx-lm's shape: (every token so far, logits of shape (1, V)) -> logits."""

Sampler = Callable[[mx.array], mx.array]
Outcome = Literal["stop", "length", "cancelled"]

# mlx-lm's prefill_step_size: a chunk's activations are counted by the memory guard (model_slot).
PREFILL_CHUNK_MAX = 2048
CLEAR_EVERY = 256  # tokens between mx.clear_cache() calls, as mlx-lm does
_async_eval = cast(Callable[..., None], mx.async_eval)  # untyped in mlx's stubs


def _read(token: mx.array) -> int:
    """The value of a sampled token (a sync point)."""
    return int(cast(int, token.item()))


class Constraint(Protocol):
    """A grammar steering the answer token by token (constrain.py implements it)."""

    def begin(self) -> list[int]:
        """The tokens the grammar forces before anything is sampled (already consumed)."""
        ...

    def compute_mask(self) -> None:
        """CPU work for the next token's allowed set; runs while MLX evaluates the step."""
        ...

    def apply(self, logits: mx.array) -> mx.array:
        """The logits with every token the grammar forbids at -inf."""
        ...

    def consume(self, token: int) -> list[int]:
        """Take the sampled token; return the tokens the grammar now forces (fast-forward)."""
        ...

    @property
    def finished(self) -> bool:
        """The grammar is complete: nothing more may be generated."""
        ...

    def error(self) -> str | None:
        """Why the grammar broke, if it did."""
        ...


class AfterThinking:
    """A constraint that waits for the end of the thinking block the prompt opened.

    Reasoning is free text; the grammar (a JSON schema, a tool call) applies to the answer after
    it, from the token that closes the block on.
    """

    def __init__(self, inner: Constraint, end: Sequence[int], eos: Collection[int] = ()) -> None:
        self._inner = inner
        self._end = list(end)
        self._eos = mx.array(sorted(eos), dtype=mx.int32) if eos else None
        self._recent: list[int] = []
        self._active = False

    def begin(self) -> list[int]:
        """Nothing is forced while the model thinks."""
        return []

    def compute_mask(self) -> None:
        """The inner grammar's mask, once it applies."""
        if self._active:
            self._inner.compute_mask()

    def apply(self, logits: mx.array) -> mx.array:
        """Masked by the grammar after thinking; while thinking, only EOS is barred (an answer
        that ended inside its reasoning would be no JSON at all, yet say "stop")."""
        if self._active:
            return self._inner.apply(logits)
        if self._eos is None:
            return logits
        barred = mx.zeros((logits.shape[-1],), dtype=mx.bool_).at[self._eos].add(True)
        return mx.where(barred, -mx.inf, logits)

    def consume(self, token: int) -> list[int]:
        """Watch for the block's end; from there the inner grammar starts (with its forced opening)."""
        if self._active:
            return self._inner.consume(token)
        self._recent = (self._recent + [token])[-len(self._end) :]
        if self._recent == self._end:
            self._active = True
            return self._inner.begin()
        return []

    @property
    def finished(self) -> bool:
        """Only the inner grammar can finish."""
        return self._active and self._inner.finished

    def error(self) -> str | None:
        """The inner grammar's error, once it applies."""
        return self._inner.error() if self._active else None


class GrammarFailed(RuntimeError):
    """The constraint reported an error mid-answer (a bug in the grammar or its engine)."""


@dataclass
class Generation:
    """What one call produced: how it ended, the tokens generated, and what the cache holds."""

    finish: Outcome = "length"
    generated: list[int] = field(default_factory=list)  # every token of the answer, EOS excluded
    cache_tokens: list[int] = field(default_factory=list)  # exactly the tokens in the KV cache
    first_token_at: float | None = None  # perf_counter when the first answer token was read
    last_token_at: float | None = None  # ... and the last (the engine's decode rate, issue 14)


def generate(
    model: Any,
    prompt: Sequence[int],
    cache: list[Any],
    *,
    cached: int,
    detokenizer: Detokenizer,
    emit: Callable[[str], bool],
    sampler: Sampler,
    max_tokens: int,
    eos: Collection[int],
    logits_processors: Sequence[LogitsProcessor] = (),
    constraint: Constraint | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    prefill: Prefill | None = None,
    kv_bits: int | None = None,
    speculation: Speculation | None = None,
) -> Generation:
    """Generate after `prompt`, whose first `cached` tokens `cache` already holds.

    `emit(text)` gets whole characters as they complete and returns True to stop there (a stop
    string). `cancelled()` is polled between prefill chunks and between tokens (or verify
    passes). With `speculation`, drafts are verified several tokens a pass (its counters say
    how many were drafted and kept); logits processors see one token at a time, so they
    turn drafting off, as does a cache that cannot be trimmed back (SSM layers).
    """
    out = Generation(cache_tokens=list(prompt[:cached]))
    if not _prefill(model, prompt, cache, out, prefill or Prefill(), cancelled, kv_bits):
        out.finish = "cancelled"
        return out
    if max_tokens < 1:
        return out
    loop = _Loop(
        model, cache, out, list(prompt), detokenizer, emit, sampler, logits_processors,
        max_tokens, eos, cancelled, kv_bits,
    )  # fmt: skip
    spec = speculation
    if spec is not None and logits_processors:
        spec = None
    if spec is not None and not can_trim_prompt_cache(cache):
        spec.notes.append("its KV cache cannot be trimmed back (recurrent or windowed layers)")
        spec = None
    tail = list(prompt[len(out.cache_tokens) :])
    if constraint is None:
        loop.decode(loop.forward(tail), spec)
    else:
        # A grammar may force the answer's opening ({"key":...): it goes in with the prompt's tail.
        opening = constraint.begin()
        if not loop.ends(opening, constraint):
            loop.constraint = constraint
            loop.decode(loop.forward(tail + opening), spec)
    return out


class _Loop:
    """One answer's decode steps: the model call, the sampler and the bookkeeping both paths share."""

    def __init__(
        self,
        model: Any,
        cache: list[Any],
        out: Generation,
        history: list[int],
        detokenizer: Detokenizer,
        emit: Callable[[str], bool],
        sampler: Sampler,
        processors: Sequence[LogitsProcessor],
        max_tokens: int,
        eos: Collection[int],
        cancelled: Callable[[], bool],
        kv_bits: int | None,
    ) -> None:
        self.model, self.cache, self.out = model, cache, out
        self.history = history  # what logits processors see: every token so far
        self.detokenizer, self.emit, self.sampler = detokenizer, emit, sampler
        self.processors, self.max_tokens, self.eos = processors, max_tokens, eos
        self.cancelled, self.kv_bits = cancelled, kv_bits
        self.constraint: Constraint | None = None

    def forward(self, tokens: list[int] | mx.array) -> mx.array:
        """Feed tokens (a list, or one still-lazy sampled token) and return the last logits."""
        if isinstance(tokens, list):
            self.out.cache_tokens.extend(tokens)
            tokens = mx.array(tokens, dtype=mx.uint32)
        logits = self.model(tokens.reshape(1, -1), cache=self.cache)
        _quantize(self.cache, self.kv_bits)
        last: mx.array = logits[:, -1, :]
        return last

    def pick(self, logits: mx.array, unread: mx.array | None = None) -> mx.array:
        """The next token, lazily: processors, then the grammar's mask, then the sampler."""
        if self.processors:
            tokens = mx.array(self.history, dtype=mx.uint32)
            if unread is not None:  # the pipelined token, fed but not read back yet
                tokens = mx.concatenate([tokens, unread.astype(mx.uint32)])
            for processor in self.processors:
                logits = processor(tokens, logits)
        if self.constraint is not None:
            logits = self.constraint.apply(logits)
        return self.sampler(logits - mx.logsumexp(logits, axis=-1, keepdims=True))

    def ends(self, tokens: Sequence[int], constraint: Constraint | None = None) -> bool:
        """Take tokens into the answer; True if it ends with them (out.finish says how).

        A grammar may be complete before the last of them (llguidance forces a closing brace
        after the token that completes a value): it is asked only once all are taken."""
        out = self.out
        for token in tokens:
            if len(out.generated) >= self.max_tokens:
                out.finish = "length"
                return True
            if token in self.eos:
                out.finish = "stop"
                return True
            out.generated.append(token)
            out.last_token_at = time.perf_counter()
            if out.first_token_at is None:
                out.first_token_at = out.last_token_at
            self.history.append(token)
            text = self.detokenizer.add(token)
            if text and self.emit(text):
                out.finish = "stop"
                return True
        if constraint is not None and constraint.finished:
            out.finish = "stop"
            return True
        if len(out.generated) >= self.max_tokens:
            out.finish = "length"
            return True
        if self.cancelled():
            out.finish = "cancelled"
            return True
        return False

    def decode(self, logits: mx.array, spec: Speculation | None) -> None:
        """From the prompt's last logits to the answer's end: plain steps, or drafts verified."""
        if self.constraint is None:
            y = self.pick(logits)
            token = _read(y)
            pending: list[int] | None = None if self.ends([token]) else [token]
        else:
            pending = self.take(logits)
        exact = False  # the next step must be a plain one (a margin check left it to one)
        while pending is not None:
            draft = [] if exact or spec is None else self.draft(pending, spec)
            if draft:
                assert spec is not None
                pending, exact = self.verify(pending, draft, spec)
                continue
            exact = False
            if self.constraint is None:
                pending = self.stream(pending, spec)
                continue
            began = time.perf_counter()
            pending = self.take(self.forward(pending))
            if spec is not None:
                spec.depth.plain(1, time.perf_counter() - began)

    def stream(self, pending: list[int], spec: Speculation | None) -> list[int] | None:
        """mlx-lm's overlap: each step is queued before the token it follows is read back.

        Feeds `pending` (tokens in the answer, not yet in the cache) first. Returns when a
        draft may pay (with the next token, read but not fed), or None when the answer ended."""
        y = self.pick(self.forward(pending))
        _async_eval(y)
        read_at = time.perf_counter()
        while True:
            last = len(self.out.generated) + 1 >= self.max_tokens
            next_y = None
            if not last:  # the next step needs only y, still lazy: queue it before reading y
                next_y = self.pick(self.forward(y), y)
                _async_eval(next_y)
            token = _read(y)
            if not last:
                self.out.cache_tokens.append(token)
            if self.ends([token]):
                return None
            if len(self.out.generated) % CLEAR_EVERY == 0:
                mx.clear_cache()
            assert next_y is not None
            y = next_y
            if spec is None:
                continue
            now = time.perf_counter()
            spec.depth.plain(1, now - read_at)
            read_at = now
            if spec.worth(self.history, self.out.generated):
                token = _read(y)
                return None if self.ends([token]) else [token]

    def take(self, logits: mx.array) -> list[int] | None:
        """A grammar's step: mask, sample, consume; the token and those forced after it, or None
        when the answer ended. The grammar needs each token before the next mask, so the mask
        overlaps the forward pass instead."""
        constraint = self.constraint
        assert constraint is not None
        _async_eval(logits)
        constraint.compute_mask()  # CPU work while MLX computes the logits
        token = _read(self.pick(logits))
        taken = [token, *self.consume(token)]
        before = len(self.out.generated)
        if self.ends(taken, constraint):
            return None
        if len(self.out.generated) // CLEAR_EVERY != before // CLEAR_EVERY:
            mx.clear_cache()
        # Fast-forward: the sampled token and every token the grammar forces, one batch.
        return taken

    def consume(self, token: int) -> list[int]:
        """The grammar takes a token; the tokens it forces next (GrammarFailed if it broke)."""
        assert self.constraint is not None
        forced = self.constraint.consume(token)
        problem = self.constraint.error()
        if problem:
            raise GrammarFailed(problem)
        return forced

    def draft(self, pending: list[int], spec: Speculation) -> list[int]:
        """Tokens worth verifying after `pending`, within max_tokens and what the cache can undo."""
        room = self.max_tokens - len(self.out.generated)
        draft = spec.draft(self.history, self.out.generated, room - 1)
        if draft and not _can_trim(self.cache, len(pending) + len(draft)):
            if not spec.notes:
                spec.notes.append("its sliding window is full, so rejected drafts cannot be undone")
            return []
        return draft

    def verify(
        self, pending: list[int], draft: list[int], spec: Speculation
    ) -> tuple[list[int] | None, bool]:
        """One forward pass over `pending` and `draft`: keep the draft's agreeing prefix and the
        model's own next token; trim the rest from the cache.

        Returns the next pending tokens (None when the answer ended) and whether the step after
        must be a plain one: greedy answers stay byte-identical to one-token decoding because a
        near-tie (top-2 gap below the margin), which a wider pass could flip, is left to it."""
        began = time.perf_counter()
        fed = pending + draft
        self.out.cache_tokens.extend(fed)
        logits = self.model(mx.array(fed, dtype=mx.uint32)[None], cache=self.cache)
        _quantize(self.cache, self.kv_bits)
        rows: mx.array = logits[0, len(pending) - 1 :, :]
        kept: list[int] = []
        keep_fed = len(fed)  # of the tokens fed, how many the cache keeps
        after: list[int] = []
        exact = False
        accepted = 0
        for j, (token, sure) in enumerate(self.judge(rows, draft, spec)):
            if not sure:  # leave row j to a one-token step over the token it follows
                kept = draft[:j]
                keep_fed = len(pending) + j - 1 if j else 0
                after = [draft[j - 1]] if j else pending
                exact = True
                break
            agrees = j < len(draft) and token == draft[j]
            forced = self.consume(token) if self.constraint is not None else []
            if agrees:
                accepted += 1
                if not forced and not (self.constraint and self.constraint.finished):
                    continue
            # The model's own token (or a draft token the grammar fast-forwards from) ends the
            # pass; it goes in with what the grammar forces, as one-token decoding feeds them.
            kept = draft[:j] + [token, *forced]
            keep_fed = len(pending) + j
            after = [token, *forced]
            exact = agrees
            break
        spec.verified(len(draft), accepted, time.perf_counter() - began)
        trim = len(fed) - keep_fed
        if trim:
            trim_prompt_cache(self.cache, trim)
            del self.out.cache_tokens[len(self.out.cache_tokens) - trim :]
        if self.ends(kept, self.constraint):
            return None, False
        return after, exact

    def judge(
        self, rows: mx.array, draft: list[int], spec: Speculation
    ) -> Iterator[tuple[int, bool]]:
        """The model's token at each row, and whether it may be trusted there, up to the first
        row whose token differs from the draft (rows past it are never read).

        Without a grammar every row is decided in one evaluation; with one, row j's mask needs
        the grammar to have taken the draft's first j tokens (the caller consumes each agreeing
        token before asking for the next row), so rows go one at a time."""
        if self.constraint is None:
            tokens, sure = self.choose(rows, spec)
            yield from zip(tokens, sure, strict=True)
            return
        yield from self._masked_rows(rows, draft, spec)

    def _masked_rows(
        self, rows: mx.array, draft: list[int], spec: Speculation
    ) -> Iterator[tuple[int, bool]]:
        constraint = self.constraint
        assert constraint is not None
        for j in range(rows.shape[0]):
            constraint.compute_mask()
            tokens, sure = self.choose(constraint.apply(rows[j : j + 1]), spec)
            yield tokens[0], sure[0]
            # verify() consumed the token before asking for the next row
            if not sure[0] or j >= len(draft) or tokens[0] != draft[j]:
                return
            if constraint.finished:
                return

    def choose(self, rows: mx.array, spec: Speculation) -> tuple[list[int], list[bool]]:
        """The sampler's token for each row; for greedy answers, whether its lead is clear."""
        logprobs = rows - mx.logsumexp(rows, axis=-1, keepdims=True)
        picked = self.sampler(logprobs)
        if not spec.greedy or spec.margin <= 0:
            return cast(list[int], picked.tolist()), [True] * rows.shape[0]
        top2 = mx.topk(logprobs, 2, axis=-1)
        gap = mx.abs(top2[:, 0] - top2[:, 1])
        mx.eval(picked, gap)
        gaps = cast(list[float], gap.tolist())
        return cast(list[int], picked.tolist()), [g >= spec.margin for g in gaps]


def _can_trim(cache: list[Any], adding: int) -> bool:
    """Whether `adding` more tokens could be trimmed back off this cache afterwards."""
    for c in cache:
        if not c.is_trimmable():
            return False
        size = getattr(c, "max_size", None)
        if size is not None and c.offset + adding >= size:
            return False  # a rotating window would overwrite what a rejection must restore
    return True


@dataclass
class Prefill:
    """Prompt chunk sizes, learned: each full chunk is timed and the next sized to stay near the target.

    A cancel or SIGTERM is seen between chunks, so one chunk must not take seconds (on a large
    model on a Mac a fixed 2048-token chunk can), while a larger chunk is faster per token.
    One Prefill lives as long as its model, so later prompts start at the learned size.
    """

    size: int = 64
    smallest: int = 32
    largest: int = PREFILL_CHUNK_MAX
    target_s: float = 0.5

    def learn(self, tokens: int, seconds: float) -> None:
        """A chunk of `tokens` took `seconds`: size the next one for the target time."""
        scaled = int(tokens * self.target_s / max(seconds, 1e-6))
        self.size = max(self.smallest, min(self.largest, scaled, tokens * 4))


def _prefill(
    model: Any,
    prompt: Sequence[int],
    cache: list[Any],
    out: Generation,
    plan: Prefill,
    cancelled: Callable[[], bool],
    kv_bits: int | None,
) -> bool:
    """Feed all but the last prompt token, in timed chunks; False if cancelled meanwhile."""
    done = len(out.cache_tokens)
    while len(prompt) - done > 1:
        size = plan.size
        n = min(size, len(prompt) - done - 1)
        chunk = prompt[done : done + n]
        t0 = time.perf_counter()
        model(mx.array(list(chunk), dtype=mx.uint32)[None], cache=cache)
        _quantize(cache, kv_bits)
        mx.eval([c.state for c in cache])
        if n == size:  # only a full chunk says how fast this model runs here
            plan.learn(n, time.perf_counter() - t0)
        out.cache_tokens.extend(chunk)
        done += n
        mx.clear_cache()
        if cancelled():
            return False
    return True


def _quantize(cache: list[Any], kv_bits: int | None) -> None:
    """mlx-lm's quantized KV cache (--kv-bits), from the first token on, where a layer allows it.

    Only plain KVCache layers convert (mlx-lm 0.32's RotatingKVCache raises), with a group size
    that divides their head sizes (Phi-3's 96 takes 32); other layers stay unquantized."""
    if kv_bits is None:
        return
    for i, c in enumerate(cache):
        keys: Any = c.keys if type(c) is KVCache else None
        if keys is None:
            continue
        dims = (keys.shape[-1], c.values.shape[-1])
        group = next((g for g in (64, 32) if all(d % g == 0 for d in dims)), None)
        if group is not None:
            cache[i] = c.to_quantized(group_size=group, bits=kv_bits)
