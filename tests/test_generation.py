"""The generation loop in-process, on a tiny random-weight llama with the tiny model's tokenizer.

The weights are random, so a scripted logits processor decides each token: the loop's own
behaviour (stops, EOS, max_tokens, cancel, the cache it reports, fast-forward, UTF-8) is what
is tested, on the main thread, without a server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import load as load_tokenizer

from tholos_mlx.detokenize import DetokenizerFactory
from tholos_mlx.generation import AfterThinking, Generation, Prefill, generate
from tholos_mlx.prompt_cache import cache_tokens
from tholos_mlx.stops import StopMatcher


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    """The tiny model's tokenizer (byte-level BPE, a few hundred tokens; made in the test)."""
    return load_tokenizer(tiny_folder)


@pytest.fixture(scope="module")
def vocab(tokenizer: Any) -> int:
    """The tokenizer's vocabulary size, added tokens included."""
    return len(tokenizer.get_vocab())


@pytest.fixture(scope="module")
def model(vocab: int) -> Any:
    """A two-layer llama with random weights and the tokenizer's vocabulary size."""
    mx.random.seed(0)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=vocab,
        tie_word_embeddings=True,
    )
    m = llama.Model(args)
    mx.eval(m.parameters())
    return m


class Script:
    """A logits processor that makes the model say exactly these tokens, then anything."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    def __call__(self, history: mx.array, logits: mx.array) -> mx.array:
        i = self.calls
        self.calls += 1
        if i >= len(self.tokens):
            return logits
        forced = mx.full(logits.shape, -1e9, dtype=logits.dtype)
        return mx.where(mx.arange(logits.shape[-1]) == self.tokens[i], 0.0, forced)


class Run:
    """One generate() call with its emitted pieces."""

    def __init__(self, model: Any, tokenizer: Any, prompt: list[int], **kwargs: Any) -> None:
        self.pieces: list[str] = []
        stops = StopMatcher(kwargs.pop("stops", ()))
        self.stops = stops

        def emit(text: str) -> bool:
            out, hit = stops.feed(text)
            if out:
                self.pieces.append(out)
            return hit

        kwargs.setdefault("sampler", make_sampler(temp=0.0))
        kwargs.setdefault("eos", tokenizer.eos_token_ids)
        kwargs.setdefault("max_tokens", 20)
        self.cache = kwargs.pop("cache", None) or make_prompt_cache(model)
        self.gen: Generation = generate(
            model,
            prompt,
            self.cache,
            cached=kwargs.pop("cached", 0),
            detokenizer=DetokenizerFactory(tokenizer)(),
            emit=emit,
            **kwargs,
        )
        if self.gen.finish != "stop" or stops.matched is None:
            tail = stops.flush()
            if tail:
                self.pieces.append(tail)

    @property
    def text(self) -> str:
        """Everything emitted."""
        return "".join(self.pieces)


def ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of text, no special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture
def prompt(tokenizer: Any) -> list[int]:
    """A short prompt."""
    return ids(tokenizer, "Tell me something.")


def test_the_scripted_answer_comes_out_whole_and_the_cache_holds_what_was_fed(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    answer = ids(tokenizer, "Hello there, friend")
    run = Run(model, tokenizer, prompt, logits_processors=[Script(answer)], max_tokens=len(answer))
    assert run.text == "Hello there, friend"
    assert run.gen.finish == "length"
    assert run.gen.generated == answer
    assert cache_tokens(run.cache) == len(run.gen.cache_tokens)
    assert run.gen.cache_tokens[: len(prompt)] == prompt


def test_the_first_and_last_answer_tokens_are_stamped_in_order(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    before = time.perf_counter()
    answer = ids(tokenizer, "Hello there, friend")
    run = Run(model, tokenizer, prompt, logits_processors=[Script(answer)], max_tokens=len(answer))
    first, last = run.gen.first_token_at, run.gen.last_token_at
    assert first is not None and last is not None
    assert before < first < last <= time.perf_counter()


def test_an_answer_of_no_tokens_has_no_stamps(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    eos = sorted(tokenizer.eos_token_ids)[0]
    run = Run(model, tokenizer, prompt, logits_processors=[Script([eos])])
    assert run.gen.generated == [] and run.gen.finish == "stop"
    assert run.gen.first_token_at is None and run.gen.last_token_at is None


def test_eos_ends_the_answer_with_stop_and_is_not_part_of_it(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    eos = next(iter(tokenizer.eos_token_ids))
    script = Script([*ids(tokenizer, "Done"), eos, *ids(tokenizer, " never")])
    run = Run(model, tokenizer, prompt, logits_processors=[script])
    assert (run.text, run.gen.finish) == ("Done", "stop")
    assert eos not in run.gen.generated


def test_a_stop_string_cuts_the_text_and_ends_with_stop(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    script = Script(ids(tokenizer, "one two END three four"))
    run = Run(model, tokenizer, prompt, logits_processors=[script], stops=("END",))
    assert run.text == "one two "
    assert run.gen.finish == "stop"
    assert run.stops.matched == "END"
    assert cache_tokens(run.cache) == len(run.gen.cache_tokens)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_max_tokens_inside_an_emoji_drops_its_bytes_and_never_sends_a_replacement_char(
    model: Any, tokenizer: Any, prompt: list[int], cut: int
) -> None:
    head = ids(tokenizer, "Party time ")
    emoji = ids(tokenizer, "🎉")
    assert len(emoji) > 1, "the tiny tokenizer spells this emoji in several byte tokens"
    cut = min(cut, len(emoji) - 1)
    run = Run(
        model,
        tokenizer,
        prompt,
        logits_processors=[Script(head + emoji)],
        max_tokens=len(head) + cut,
    )
    assert run.gen.finish == "length"
    assert "\ufffd" not in run.text
    assert all("\ufffd" not in piece for piece in run.pieces)
    assert run.text == "Party time "


def test_accented_letters_and_an_emoji_that_complete_come_out_exactly(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    text = "Crème brûlée au café 🎉 ✓"
    answer = ids(tokenizer, text)
    run = Run(model, tokenizer, prompt, logits_processors=[Script(answer)], max_tokens=len(answer))
    assert run.text == text
    assert all("\ufffd" not in piece for piece in run.pieces)


def test_a_cancel_during_prefill_stops_between_chunks_with_the_cache_matching(
    model: Any, tokenizer: Any
) -> None:
    long_prompt = ids(tokenizer, "word " * 200)
    polls: list[int] = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) >= 2

    plan = Prefill(size=32, smallest=32, largest=32)
    run = Run(model, tokenizer, long_prompt, cancelled=cancelled, prefill=plan)
    assert run.gen.finish == "cancelled"
    assert run.gen.generated == []
    assert len(run.gen.cache_tokens) == 64  # two chunks of 32, then the cancel was seen
    assert cache_tokens(run.cache) == 64
    assert run.gen.cache_tokens == long_prompt[:64]


def test_a_cancel_mid_answer_leaves_the_cache_at_exactly_the_fed_tokens(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    answer = ids(tokenizer, "a b c d e f g h i j")
    seen: list[int] = []

    def cancelled() -> bool:
        seen.append(1)
        return len(seen) > 3

    run = Run(model, tokenizer, prompt, logits_processors=[Script(answer)], cancelled=cancelled)
    assert run.gen.finish == "cancelled"
    assert 0 < len(run.gen.generated) < len(answer)
    held = cache_tokens(run.cache)
    assert held == len(run.gen.cache_tokens)
    # The pipelined step fed the last token read back, so the cache holds prompt + answer so far.
    assert run.gen.cache_tokens == prompt + run.gen.generated


def test_a_cached_prefix_is_not_fed_again(model: Any, tokenizer: Any, prompt: list[int]) -> None:
    first = Run(model, tokenizer, prompt, max_tokens=3)
    cache = first.cache
    held = list(first.gen.cache_tokens)
    follow = held + ids(tokenizer, " And more.")
    second = Run(model, tokenizer, follow, cache=cache, cached=len(held), max_tokens=2)
    assert second.gen.cache_tokens[: len(follow)] == follow
    assert cache_tokens(cache) == len(second.gen.cache_tokens)


def test_the_same_seed_gives_the_same_sampled_answer(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    def sampled(seed: int) -> list[int]:
        mx.random.seed(seed)
        return Run(
            model, tokenizer, prompt, sampler=make_sampler(temp=1.0), max_tokens=8
        ).gen.generated

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


def test_logits_processors_see_every_token_so_far(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    lengths: list[int] = []

    def spy(history: mx.array, logits: mx.array) -> mx.array:
        lengths.append(history.shape[0])
        return logits

    Run(model, tokenizer, prompt, logits_processors=[spy], max_tokens=5)
    assert lengths == [len(prompt) + i for i in range(5)]


class Forcing:
    """A stand-in grammar: after the first token it forces `forced`, then finishes."""

    def __init__(self, first: int, forced: list[int], opening: Sequence[int] = ()) -> None:
        self.first, self.forced, self.opening = first, forced, list(opening)
        self.masks = 0
        self.consumed: list[int] = []
        self._done = False

    def begin(self) -> list[int]:
        return self.opening

    def compute_mask(self) -> None:
        self.masks += 1

    def apply(self, logits: mx.array) -> mx.array:
        return mx.where(mx.arange(logits.shape[-1]) == self.first, 0.0, -1e9)

    def consume(self, token: int) -> list[int]:
        self.consumed.append(token)
        self._done = True
        return list(self.forced)

    @property
    def finished(self) -> bool:
        return self._done

    def error(self) -> str | None:
        return None


def test_forced_tokens_are_emitted_and_fed_in_one_step(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    first = ids(tokenizer, "{")
    forced = ids(tokenizer, '"answer": "yes"}')
    grammar = Forcing(first[0], forced)
    run = Run(model, tokenizer, prompt, constraint=grammar)
    assert run.text == '{"answer": "yes"}'
    assert run.gen.finish == "stop"
    assert grammar.masks == 1  # one sampled token; the rest came forced, without a mask each
    assert run.gen.generated == first + forced


def test_forced_tokens_count_against_max_tokens(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    first = ids(tokenizer, "{")
    forced = ids(tokenizer, '"answer": "yes"}')
    run = Run(model, tokenizer, prompt, constraint=Forcing(first[0], forced), max_tokens=3)
    assert len(run.gen.generated) == 3
    assert run.gen.finish == "length"


def test_an_opening_the_grammar_forces_is_emitted_and_fed_with_the_prompt(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    opening = ids(tokenizer, '{"answer":')
    first = ids(tokenizer, '"')
    grammar = Forcing(first[0], ids(tokenizer, 'yes"}'), opening=opening)
    run = Run(model, tokenizer, prompt, constraint=grammar)
    assert run.text == '{"answer":"yes"}'
    assert run.gen.generated[: len(opening)] == opening
    assert grammar.masks == 1
    assert run.gen.cache_tokens[: len(prompt) + len(opening)] == prompt + opening


@pytest.fixture(autouse=True)
def _no_leak() -> Iterator[None]:
    yield
    mx.clear_cache()


def test_a_grammar_after_thinking_lets_the_reasoning_run_free_then_applies(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    thought = ids(tokenizer, "hmm, JSON.")
    end = ids(tokenizer, "</think>")
    first = ids(tokenizer, "{")
    inner = Forcing(first[0], ids(tokenizer, '"ok":1}'), opening=ids(tokenizer, "\n"))
    grammar = AfterThinking(inner, end)
    run = Run(
        model, tokenizer, prompt, constraint=grammar, logits_processors=[Script(thought + end)]
    )
    assert run.text == 'hmm, JSON.</think>\n{"ok":1}'
    assert inner.masks == 1  # no mask while thinking
    assert run.gen.finish == "stop"


@pytest.mark.parametrize("head_dim", [64, 96, 40])
def test_kv_bits_quantizes_what_it_can_and_never_fails_on_an_odd_head_size(
    tokenizer: Any, vocab: int, prompt: list[int], head_dim: int
) -> None:
    from mlx_lm.models.cache import QuantizedKVCache

    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=head_dim * 2,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        rms_norm_eps=1e-5,
        vocab_size=vocab,
        tie_word_embeddings=True,
    )
    odd = llama.Model(args)
    mx.eval(odd.parameters())
    run = Run(odd, tokenizer, prompt, kv_bits=8, max_tokens=3)
    assert len(run.gen.generated) == 3
    quantized = isinstance(run.cache[0], QuantizedKVCache)
    assert quantized == (head_dim % 32 == 0)  # 64 and 96 quantize; 40 stays as it is


def test_a_grammar_after_thinking_bars_eos_while_the_model_thinks(
    model: Any, tokenizer: Any, prompt: list[int]
) -> None:
    eos = next(iter(tokenizer.eos_token_ids))
    inner = Forcing(ids(tokenizer, "{")[0], ids(tokenizer, "}"))
    grammar = AfterThinking(inner, ids(tokenizer, "</think>"), tokenizer.eos_token_ids)
    # The script wants EOS at once; barred, the model goes on (into max_tokens), never "stop".
    prefer_eos = Script([eos] * 5)
    run = Run(
        model, tokenizer, prompt, constraint=grammar, logits_processors=[prefer_eos], max_tokens=5
    )
    assert eos not in run.gen.generated
    assert run.gen.finish == "length"
