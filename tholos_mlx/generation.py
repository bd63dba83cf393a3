"""The generation loop: prefill in chunks, sample with logits processors and a grammar, emit whole characters.

A plain function over (model, prompt ids, cache, sampler, processors, constraint, emit): it runs
on whichever thread calls it (the engine thread in the server, the main thread in tests), owns
no state between calls, and reports exactly which tokens its KV cache now holds, so the caller
can keep that cache for the next prompt that shares its prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from tholos_mlx.detokenize import Detokenizer

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
) -> Generation:
    """Generate after `prompt`, whose first `cached` tokens `cache` already holds.

    `emit(text)` gets whole characters as they complete and returns True to stop there (a stop
    string). `cancelled()` is polled between prefill chunks and between tokens.
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
    tail = list(prompt[len(out.cache_tokens) :])
    if constraint is None:
        loop.pipelined(loop.forward(tail))
    else:
        # A grammar may force the answer's opening ({"key":...): it goes in with the prompt's tail.
        opening = constraint.begin()
        if not loop.ends(opening, constraint):
            loop.constrained(loop.forward(tail + opening), constraint)
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

    def pipelined(self, logits: mx.array) -> None:
        """mlx-lm's overlap: the next step is queued before this token is read back.

        Except for the first token: it goes out before the second step is queued, so that the
        step does not hold the CPU (or the GPU queue) while the first token is on its way."""
        y = self.pick(logits)
        token = _read(y)
        if self.ends([token]):
            return
        y = self.pick(self.forward(y))  # the first token is in the history already
        self.out.cache_tokens.append(token)
        _async_eval(y)
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
                return
            if len(self.out.generated) % CLEAR_EVERY == 0:
                mx.clear_cache()
            assert next_y is not None
            y = next_y

    def constrained(self, logits: mx.array, constraint: Constraint) -> None:
        """The grammar needs each token before the next mask: the mask overlaps the forward pass."""
        self.constraint = constraint
        while True:
            _async_eval(logits)
            constraint.compute_mask()  # CPU work while MLX computes the logits
            token = _read(self.pick(logits))
            forced = constraint.consume(token)
            problem = constraint.error()
            if problem:
                raise GrammarFailed(problem)
            before = len(self.out.generated)
            if self.ends([token, *forced], constraint):
                return
            if len(self.out.generated) // CLEAR_EVERY != before // CLEAR_EVERY:
                mx.clear_cache()
            # Fast-forward: the sampled token and every token the grammar forces, one batch.
            logits = self.forward([token, *forced])


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
