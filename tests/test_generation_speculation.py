"""Speculation inside the generation loop: drafts verified in one pass change nothing but the speed.

Tiny random-weight llamas with the tiny test model's tokenizer: their greedy answers loop, so prompt
lookup finds drafts and both the accepting and the rejecting paths run. Every test compares an
answer with speculation on against the same answer with it off, token for token and byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models import llama
from mlx_lm.models.cache import RotatingKVCache, make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import load as load_tokenizer

from tholos_mlx.constrain import Grammars, ToolMarkers
from tholos_mlx.detokenize import DetokenizerFactory
from tholos_mlx.draft_model import DraftModel, same_vocabulary
from tholos_mlx.drafting import Speculation, speculation
from tholos_mlx.generation import Constraint, Generation, generate
from tholos_mlx.prompt_cache import cache_tokens
from tholos_mlx.request import ResponseFormat, Tool, ToolChoice
from tholos_mlx.stops import StopMatcher

PROMPTS = [
    "Tell me something.",
    "def add(a, b):\n    return a + b\n\nRewrite add with type hints.",
    'Echo {"name": "tholos", "tags": ["a", "b"], "n": 3} with "ok": true added.',
    "Crème brûlée au café 🎉 ✓ — 日本語のテキスト",
    "ERROR disk full\nWARN retry\nERROR disk full\nWARN retry\nQuote the log.",
    "a b a b a b a b",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    """The tiny model's tokenizer (byte-level BPE, a few hundred tokens; made in the test)."""
    return load_tokenizer(tiny_folder)


def _llama(seed: int, tokenizer: Any) -> Any:
    """Two random layers over the tokenizer's vocabulary (added tokens included)."""
    mx.random.seed(seed)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=len(tokenizer.get_vocab()),
        tie_word_embeddings=True,
    )
    m = llama.Model(args)
    mx.eval(m.parameters())
    return m


@pytest.fixture(scope="module", params=[0, 1])
def model(request: pytest.FixtureRequest, tokenizer: Any) -> Any:
    """Two-layer llamas with random weights (two seeds: two different answer shapes)."""
    return _llama(request.param, tokenizer)


class Counting:
    """A model that counts its forward passes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.passes = 0

    def __call__(self, tokens: mx.array, cache: Any = None) -> mx.array:
        self.passes += 1
        out: mx.array = self.inner(tokens, cache=cache)
        return out

    @property
    def layers(self) -> Any:
        return self.inner.layers


class Answer:
    """One generate() call: its text as emitted, the Generation, its cache and speculation."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt: list[int],
        spec: Speculation | None,
        *,
        stops: Sequence[str] = (),
        max_tokens: int = 40,
        temp: float = 0.0,
        top_k: int = 0,
        constraint: Constraint | None = None,
        cache: list[Any] | None = None,
        kv_bits: int | None = None,
        cancel_after: int | None = None,
    ) -> None:
        matcher = StopMatcher(stops)
        pieces: list[str] = []
        polls = [0]

        def emit(text: str) -> bool:
            out, hit = matcher.feed(text)
            pieces.append(out)
            return hit

        def cancelled() -> bool:
            polls[0] += 1
            return cancel_after is not None and polls[0] > cancel_after

        self.model = Counting(model)
        self.cache = cache if cache is not None else make_prompt_cache(model)
        self.spec = spec
        self.gen: Generation = generate(
            self.model,
            prompt,
            self.cache,
            cached=0,
            detokenizer=DetokenizerFactory(tokenizer)(),
            emit=emit,
            sampler=make_sampler(temp=temp, top_k=top_k),
            max_tokens=max_tokens,
            eos=tokenizer.eos_token_ids,
            constraint=constraint,
            cancelled=cancelled,
            kv_bits=kv_bits,
            speculation=spec,
        )
        if self.gen.finish != "stop" or matcher.matched is None:
            pieces.append(matcher.flush())
        self.text = "".join(pieces)
        self.pieces = [p for p in pieces if p]


def ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of text, no special tokens."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def spec(
    depth: int = 4, prediction: Sequence[int] | None = None, margin: float = 0.05
) -> Speculation:
    """N-gram drafting for a greedy answer, as the server sets it up, at the CPU's usual price
    of a wider pass (not learned from this busy machine's times, so the depths are repeatable)."""
    found = speculation(
        "ngram", depth, greedy=True, prediction=prediction, margin=margin, learn=False
    )
    assert found is not None
    return found


def same(on: Answer, off: Answer) -> None:
    """The two answers are one answer, and each cache holds exactly the tokens it says."""
    assert on.gen.generated == off.gen.generated
    assert on.text == off.text
    assert "".join(on.pieces) == "".join(off.pieces)
    assert on.gen.finish == off.gen.finish
    for answer in (on, off):
        assert cache_tokens(answer.cache) == len(answer.gen.cache_tokens)


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_answers_are_the_same_tokens_with_drafting_on_and_off(
    model: Any, tokenizer: Any, text: str
) -> None:
    prompt = ids(tokenizer, text)
    off = Answer(model, tokenizer, prompt, None, max_tokens=60)
    on = Answer(model, tokenizer, prompt, spec(), max_tokens=60)
    same(on, off)
    assert on.spec is not None
    assert on.spec.accepted <= on.spec.drafted


def test_drafting_is_exercised_and_saves_forward_passes_on_an_answer_that_repeats(
    tokenizer: Any,
) -> None:
    # A random model's greedy answer falls into a loop: prompt lookup predicts it.
    model = _llama(0, tokenizer)
    prompt = ids(tokenizer, PROMPTS[-1])
    off = Answer(model, tokenizer, prompt, None, max_tokens=80)
    on = Answer(model, tokenizer, prompt, spec(), max_tokens=80)
    same(on, off)
    assert on.spec is not None and on.spec.accepted > 10
    assert on.model.passes < off.model.passes


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 13])
def test_max_tokens_ends_the_answer_at_the_same_token(
    model: Any, tokenizer: Any, max_tokens: int
) -> None:
    prompt = ids(tokenizer, PROMPTS[-1])
    off = Answer(model, tokenizer, prompt, None, max_tokens=max_tokens)
    on = Answer(model, tokenizer, prompt, spec(), max_tokens=max_tokens)
    same(on, off)
    assert len(on.gen.generated) == max_tokens or on.gen.finish == "stop"


def test_a_stop_string_inside_an_accepted_draft_cuts_the_answer_where_it_would_without(
    model: Any, tokenizer: Any
) -> None:
    prompt = ids(tokenizer, PROMPTS[-1])
    full = Answer(model, tokenizer, prompt, None, max_tokens=60).text
    stripped = full.strip()
    assert len(stripped) > 8, "the random model says something to cut"
    stop = stripped[len(stripped) * 2 // 3 :][:3]
    off = Answer(model, tokenizer, prompt, None, max_tokens=60, stops=(stop,))
    on = Answer(model, tokenizer, prompt, spec(), max_tokens=60, stops=(stop,))
    same(on, off)
    assert stop not in on.text


def test_a_json_schema_answer_is_the_same_and_valid_with_drafting(
    model: Any, tokenizer: Any
) -> None:
    grammars = Grammars(tokenizer, metal=False)
    fmt = ResponseFormat(
        "json_schema",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "tags": {"type": "array"}},
            "required": ["name", "tags"],
            "additionalProperties": False,
        },
    )
    prompt = ids(tokenizer, PROMPTS[2])
    off = Answer(model, tokenizer, prompt, None, constraint=grammars.for_format(fmt))
    on = Answer(model, tokenizer, prompt, spec(), constraint=grammars.for_format(fmt))
    same(on, off)
    assert on.text.startswith('{"name"')


def test_a_forced_tool_call_is_the_same_with_drafting(model: Any, tokenizer: Any) -> None:
    grammars = Grammars(tokenizer, metal=False)
    tool = Tool(
        "lookup",
        parameters={
            "type": "object",
            "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["q"],
        },
    )
    markers = ToolMarkers("<tool_call>", "</tool_call>")
    choice = ToolChoice("required")
    prompt = ids(tokenizer, PROMPTS[1])
    answers = [
        Answer(
            model,
            tokenizer,
            prompt,
            s,
            max_tokens=50,
            constraint=grammars.for_tool_call([tool], choice, False, markers),
        )
        for s in (None, spec())
    ]
    same(answers[1], answers[0])
    assert answers[1].text.startswith("<tool_call>")


def test_a_sampled_answer_keeps_a_draft_only_where_the_sampler_picks_it(
    model: Any, tokenizer: Any
) -> None:
    # top_k=1 makes the sampler's categorical draw certain: its answer is the greedy one,
    # through the sampled verify path (no margin check), so it must match token for token.
    prompt = ids(tokenizer, PROMPTS[-1])
    off = Answer(model, tokenizer, prompt, None, max_tokens=50)
    drafting = speculation("ngram", 4, greedy=False, learn=False)
    on = Answer(model, tokenizer, prompt, drafting, max_tokens=50, temp=0.8, top_k=1)
    same(on, off)
    assert drafting is not None and drafting.drafted > 0


def test_a_quantized_kv_cache_gives_the_same_answer_with_drafting(
    model: Any, tokenizer: Any
) -> None:
    prompt = ids(tokenizer, PROMPTS[4])
    off = Answer(model, tokenizer, prompt, None, kv_bits=8)
    on = Answer(model, tokenizer, prompt, spec(), kv_bits=8)
    same(on, off)


def test_a_sliding_window_that_fills_stops_drafting_and_changes_nothing(
    model: Any, tokenizer: Any
) -> None:
    prompt = ids(tokenizer, PROMPTS[-1])
    window = len(prompt) + 12  # fills a dozen tokens into the answer

    def rotating() -> list[Any]:
        return [RotatingKVCache(max_size=window) for _ in model.layers]

    off = Answer(model, tokenizer, prompt, None, cache=rotating(), max_tokens=40)
    on = Answer(model, tokenizer, prompt, spec(), cache=rotating(), max_tokens=40)
    assert isinstance(on.cache[0], RotatingKVCache)
    assert on.gen.generated == off.gen.generated and on.text == off.text


def test_a_client_that_leaves_mid_draft_frees_the_engine_within_one_verify_pass(
    tokenizer: Any,
) -> None:
    model = _llama(0, tokenizer)
    prompt = ids(tokenizer, PROMPTS[-1])
    full = Answer(model, tokenizer, prompt, spec(), max_tokens=80)
    assert full.spec is not None and full.spec.accepted > 0
    for after in (2, 5, 9):
        cut = Answer(model, tokenizer, prompt, spec(), max_tokens=80, cancel_after=after)
        assert cut.gen.finish == "cancelled"
        assert cut.gen.generated == full.gen.generated[: len(cut.gen.generated)]
        # each poll comes after one step: a plain token or one verify pass of at most 4 + 1
        assert len(cut.gen.generated) <= (after + 1) * 5
        assert cache_tokens(cut.cache) == len(cut.gen.cache_tokens)


def test_a_prediction_that_is_the_answer_is_accepted_nearly_whole(
    model: Any, tokenizer: Any
) -> None:
    prompt = ids(tokenizer, PROMPTS[0])
    off = Answer(model, tokenizer, prompt, None, max_tokens=40)
    # No margin check: a random model's near-ties would leave rows to one-token steps, and on
    # a CPU a wide pass agrees exactly with them (the answer is compared all the same).
    predicted = spec(prediction=off.gen.generated, margin=0.0)
    on = Answer(model, tokenizer, prompt, predicted, max_tokens=40)
    same(on, off)
    assert predicted.predicted_kept >= len(off.gen.generated) // 2
    assert predicted.predicted_drafted - predicted.predicted_kept <= 2
    assert on.model.passes < off.model.passes


def test_a_wrong_prediction_changes_nothing_in_the_answer(model: Any, tokenizer: Any) -> None:
    prompt = ids(tokenizer, PROMPTS[0])
    off = Answer(model, tokenizer, prompt, None, max_tokens=30)
    wrong = ids(tokenizer, "Something else entirely, which the model would never say. " * 3)
    on = Answer(model, tokenizer, prompt, spec(prediction=wrong), max_tokens=30)
    same(on, off)


def test_logits_processors_turn_drafting_off(model: Any, tokenizer: Any) -> None:
    prompt = ids(tokenizer, PROMPTS[-1])
    drafting = spec()
    generate(
        model,
        prompt,
        make_prompt_cache(model),
        cached=0,
        detokenizer=DetokenizerFactory(tokenizer)(),
        emit=lambda _: False,
        sampler=make_sampler(temp=0.0),
        max_tokens=30,
        eos=tokenizer.eos_token_ids,
        logits_processors=[lambda _, logits: logits],
        speculation=drafting,
    )
    assert drafting.drafted == 0


def draft_spec(drafter: Any, margin: float = 0.05) -> Speculation:
    """Drafting by a draft model for a greedy answer."""
    found = speculation(
        "draft", 4, greedy=True, margin=margin, learn=False, source=DraftModel(drafter)
    )
    assert found is not None
    return found


def test_a_draft_model_identical_to_the_model_has_every_draft_kept(tokenizer: Any) -> None:
    model = _llama(0, tokenizer)
    prompt = ids(tokenizer, PROMPTS[1])
    off = Answer(model, tokenizer, prompt, None, max_tokens=40)
    # No margin check: on a CPU a wide pass agrees exactly with one-token steps, and a random
    # model's near-ties would otherwise leave some rows to them.
    on = Answer(model, tokenizer, prompt, draft_spec(model, margin=0.0), max_tokens=40)
    same(on, off)
    assert on.spec is not None and on.spec.drafted > 0
    assert on.spec.accepted == on.spec.drafted
    assert on.model.passes < off.model.passes


def test_a_draft_model_that_disagrees_changes_nothing_in_the_answer(
    model: Any, tokenizer: Any
) -> None:
    prompt = ids(tokenizer, PROMPTS[0])
    off = Answer(model, tokenizer, prompt, None, max_tokens=30)
    on = Answer(model, tokenizer, prompt, draft_spec(_llama(7, tokenizer)), max_tokens=30)
    same(on, off)


def test_the_draft_models_cache_holds_exactly_what_it_was_fed(tokenizer: Any) -> None:
    drafter = DraftModel(_llama(7, tokenizer))
    history = ids(tokenizer, PROMPTS[1])
    first = drafter.draft(list(history), 3)
    assert len(first) == 3 and cache_tokens(drafter.cache) == len(drafter.fed)
    # the large model kept one drafted token and said another: the drafter follows
    history += [first[0], first[1] + 1]
    again = drafter.draft(list(history), 2)
    assert len(again) == 2 and drafter.fed[: len(history)] == history
    assert cache_tokens(drafter.cache) == len(drafter.fed)


class Vocab:
    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def test_a_tokenizer_with_another_vocabulary_cannot_draft(tokenizer: Any) -> None:
    assert same_vocabulary(tokenizer, tokenizer)
    assert not same_vocabulary(Vocab({"a": 0, "b": 1}), Vocab({"a": 1, "b": 0}))
