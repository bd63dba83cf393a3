"""One request's answer on the engine thread, with a tiny random-weight llama and its tokenizer.

Each test runs answering.answer as the engine would and reads the events it put: refusals
before Started, the finish reasons, the prompt cache kept across a refusal, the summary line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import orjson
import pytest
from mlx_lm.models import llama
from mlx_lm.tokenizer_utils import load as load_tokenizer

from tests.tiny_model import EOS_ID, TINY_ID, write_tokenizer
from tholos_mlx import timings
from tholos_mlx.answering import Options, answer
from tholos_mlx.chat_prompt import prompt_ids, tool_format
from tholos_mlx.detokenize import DetokenizerFactory
from tholos_mlx.drafting import Prices
from tholos_mlx.errors import ContextLengthExceeded, InsufficientMemory
from tholos_mlx.events import (
    Delta,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    ToolCallDelta,
    ToolCallStart,
)
from tholos_mlx.model_slot import Loaded, ModelSlot, measured_kv_bytes_per_token
from tholos_mlx.prompt_cache import PromptCache
from tholos_mlx.request import (
    GenerationRequest,
    Message,
    ResponseFormat,
    Tool,
    ToolChoice,
)
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

MB = 1024 * 1024
HELLO = (Message("user", "Tell me something about the sea."),)


class Sink:
    """What the engine hands the runner: events kept in order, and a cancel flag."""

    def __init__(self, cancelled: bool = False) -> None:
        self.events: list[Event] = []
        self.cancelled = cancelled

    def put(self, item: Event) -> None:
        self.events.append(item)

    @property
    def finished(self) -> Finished:
        last = self.events[-1]
        assert isinstance(last, Finished), self.events
        return last

    @property
    def started(self) -> Started:
        first = self.events[0]
        assert isinstance(first, Started), self.events
        return first

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, Delta))


@pytest.fixture(scope="module")
def loaded(tiny_folder: Path) -> Loaded:
    """The tiny model's tokenizer in front of a two-layer llama with random weights."""
    tokenizer = load_tokenizer(tiny_folder)
    mx.random.seed(0)
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
    model = llama.Model(args)
    mx.eval(model.parameters())
    return Loaded(
        entry=ModelEntry(TINY_ID, "fast", tiny_folder),
        model=model,
        tokenizer=tokenizer,
        context=4096,
        weights_bytes=4 * MB,
        detokenizers=DetokenizerFactory(tokenizer),
        tools=tool_format(tokenizer),
        kv_per_token=measured_kv_bytes_per_token(model, None) or 1024,
    )


def slot_with(loaded: Loaded, *, memory_limit: int = 2**34) -> ModelSlot:
    """A model slot holding `loaded`, as after a load, with a 64 MiB prompt cache."""
    slot = ModelSlot(memory_limit=memory_limit, prompt_cache_mb=64)
    slot.current, slot.last = loaded, loaded.entry
    slot.cache = PromptCache(64 * MB)
    return slot


@pytest.fixture
def slot(loaded: Loaded) -> Iterator[ModelSlot]:
    yield slot_with(loaded)
    mx.clear_cache()


def run(
    slot: ModelSlot, request: GenerationRequest, sink: Sink | None = None, **options: Any
) -> Sink:
    """answer() as the engine thread calls it."""
    out = sink or Sink()
    answer(slot, request, None, out, Timings(timings.now(), timings.now()), Options(**options))
    return out


def greedy(max_tokens: int | None = 6, **fields: Any) -> GenerationRequest:
    return GenerationRequest(messages=HELLO, temperature=0.0, max_tokens=max_tokens, **fields)


def test_an_answer_is_started_then_its_text_then_finished_by_max_tokens(slot: ModelSlot) -> None:
    out = run(slot, greedy(6))
    assert out.started.model == TINY_ID and out.started.prompt_tokens > 0
    assert out.text
    assert out.finished.finish_reason == "length"
    assert out.finished.usage.completion_tokens == 6
    assert out.finished.usage.prompt_tokens == out.started.prompt_tokens


def test_a_prompt_that_fills_the_context_is_refused_before_anything_starts(
    loaded: Loaded,
) -> None:
    slot = slot_with(dataclasses.replace(loaded, context=8))
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 8 tokens"):
        run(slot, greedy(6), sink := Sink())
    assert sink.events == []


def test_a_request_that_cannot_fit_in_memory_is_refused_and_its_conversation_keeps_its_cache(
    loaded: Loaded, slot: ModelSlot
) -> None:
    first = run(slot, greedy(4))
    assert first.started.cached_tokens == 0
    prompt = first.started.prompt_tokens
    # Room for the weights and this prompt's KV cache with a short answer, not a long one.
    slot._memory_limit = loaded.weights_bytes + loaded.kv_per_token * (prompt + 300)
    with pytest.raises(InsufficientMemory) as refused:
        run(slot, greedy(2000), sink := Sink())
    assert refused.value.param == "max_tokens" and sink.events == []
    again = run(slot, greedy(4))
    assert again.started.cached_tokens > 0  # the refused request gave its prefix back


def test_the_same_conversation_again_reuses_its_prompt_from_the_cache(slot: ModelSlot) -> None:
    first = run(slot, greedy(3))
    again = run(slot, greedy(3))
    assert 0 < again.started.cached_tokens < again.started.prompt_tokens
    assert again.finished.usage.cached_tokens == again.started.cached_tokens
    assert again.text == first.text


def test_a_json_schema_answer_follows_its_grammar_and_ends_with_stop(slot: ModelSlot) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    schema |= {"required": ["ok"], "additionalProperties": False}
    out = run(slot, greedy(None, response_format=ResponseFormat("json_schema", schema)))
    assert orjson.loads(out.text) in ({"ok": True}, {"ok": False})
    assert out.finished.finish_reason == "stop"


def test_a_forced_tool_call_is_a_whole_call_that_finishes_with_tool_calls(
    slot: ModelSlot,
) -> None:
    city: dict[str, Any] = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}}
    city |= {"required": ["city"], "additionalProperties": False}
    weather = Tool("get_weather", "The weather in a city.", city)
    request = greedy(
        None,
        tools=(weather,),
        tool_choice=ToolChoice("function", "get_weather"),
        parallel_tool_calls=False,
    )
    out = run(slot, request)
    (start,) = [e for e in out.events if isinstance(e, ToolCallStart)]
    arguments = "".join(e.arguments for e in out.events if isinstance(e, ToolCallDelta))
    assert start.name == "get_weather"
    assert orjson.loads(arguments)["city"] in ("Paris", "Rome")
    assert out.finished.finish_reason == "tool_calls"


def test_a_stop_string_the_answer_reaches_ends_it_with_stop_and_names_it(
    slot: ModelSlot,
) -> None:
    free = run(slot, greedy(6)).text
    stop = free[len(free) // 2 :][:3]  # a piece the greedy answer is known to reach
    out = run(slot, greedy(6, stop=(stop,)))
    assert out.finished.finish_reason == "stop"
    assert out.finished.stop_sequence == stop
    assert stop not in out.text and free.startswith(out.text)


def test_a_request_cancelled_before_its_turn_puts_nothing_and_loads_nothing(
    loaded: Loaded,
) -> None:
    slot = ModelSlot(memory_limit=2**34)  # nothing loaded: the answer must not even try
    out = run(slot, greedy(6), Sink(cancelled=True))
    assert out.events == [] and slot.current is None


def test_the_summary_line_carries_the_timings_and_never_the_text_by_default(
    slot: ModelSlot, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tholos.engine"):
        out = run(slot, greedy(4))
    (line,) = [r.getMessage() for r in caplog.records if "timing" in r.getMessage()]
    assert line.startswith(f"{TINY_ID}: ") and "finish length" in line
    assert timings.parse(line) is not None
    assert "sea" not in caplog.text and out.text not in caplog.text


def test_log_prompts_logs_the_prompt_and_the_answer(
    slot: ModelSlot, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tholos.engine"):
        out = run(slot, greedy(4), log_prompts=True)
    assert "about the sea" in caplog.text and repr(out.text) in caplog.text


def test_an_answer_naming_no_limit_stops_at_the_default_cap_and_one_naming_more_gets_it(
    slot: ModelSlot,
) -> None:
    capped = run(slot, greedy(None), default_max_tokens=3)
    assert capped.finished.finish_reason == "length"
    assert capped.finished.usage.completion_tokens == 3
    asked = run(slot, greedy(5), default_max_tokens=3)
    assert asked.finished.usage.completion_tokens == 5


# --- a thinking model: the grammar waits for the end of the thinking -----------------------------


class Scripted:
    """A model that says `script` (token ids) after the prompt, then whatever its logits like.

    It wraps the tiny llama, so the cache is real; each position's logits get a bias towards the
    script's token for the position that follows it.
    """

    def __init__(self, model: Any, prompt_tokens: int, script: list[int]) -> None:
        self.inner, self.layers = model, model.layers
        self.prompt_tokens, self.script = prompt_tokens, script

    def __call__(self, inputs: mx.array, cache: Any = None) -> mx.array:
        start = cache[0].offset if cache else 0
        logits: mx.array = self.inner(inputs, cache=cache)
        bias = mx.zeros(logits.shape[1:], dtype=logits.dtype)
        for i in range(inputs.shape[1]):
            k = start + i + 1 - self.prompt_tokens
            if 0 <= k < len(self.script):
                bias[i, self.script[k]] = 1e4
        return logits + bias


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory, loaded: Loaded) -> Loaded:
    """The tiny model with a tokenizer that thinks first (<think> opened by the template)."""
    folder = tmp_path_factory.mktemp("thinker")
    write_tokenizer(folder, thinking=True)
    tokenizer = load_tokenizer(folder)
    assert tokenizer.has_thinking
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
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return dataclasses.replace(
        loaded,
        model=model,
        tokenizer=tokenizer,
        detokenizers=DetokenizerFactory(tokenizer),
        tools=tool_format(tokenizer),
    )


def test_a_thinking_model_thinks_freely_then_answers_in_its_grammar(thinker: Loaded) -> None:
    tok = thinker.tokenizer
    prompt = len(prompt_ids(tok, HELLO))
    # Thinking that breaks the schema, then the end of thinking; the grammar writes the rest.
    script = tok.encode('{"ok": 1 hmm.</think>\n', add_special_tokens=False)
    slot = slot_with(dataclasses.replace(thinker, model=Scripted(thinker.model, prompt, script)))
    schema: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    schema |= {"required": ["ok"], "additionalProperties": False}
    out = run(slot, greedy(40, response_format=ResponseFormat("json_schema", schema)))
    reasoning = "".join(e.text for e in out.events if isinstance(e, ReasoningDelta))
    assert reasoning.strip() == '{"ok": 1 hmm.'  # no mask while it thinks
    assert orjson.loads(out.text) in ({"ok": True}, {"ok": False})
    assert out.finished.finish_reason == "stop"


def test_a_thinking_model_with_no_grammar_ends_at_eos_with_stop(thinker: Loaded) -> None:
    tok = thinker.tokenizer
    prompt = len(prompt_ids(tok, HELLO))
    script = [*tok.encode("hmm.</think>\nHello", add_special_tokens=False), EOS_ID]
    slot = slot_with(dataclasses.replace(thinker, model=Scripted(thinker.model, prompt, script)))
    out = run(slot, greedy(40))
    reasoning = "".join(e.text for e in out.events if isinstance(e, ReasoningDelta))
    assert reasoning.strip() == "hmm." and out.text.strip() == "Hello"
    assert out.finished.finish_reason == "stop" and out.finished.stop_sequence is None
    assert out.finished.usage.completion_tokens == len(script) - 1  # EOS is not part of it


def test_across_ranks_the_draft_depth_learns_nothing_from_timings() -> None:
    from tholos_mlx import answering
    from tholos_mlx.request import GenerationRequest, Message

    request = GenerationRequest(messages=(Message("user", "hi"),), temperature=0.0)
    loaded: Any = SimpleNamespace(prices=Prices())
    alone: Any = answering._speculation(None, loaded, request, [], answering.Options())  # type: ignore[arg-type]
    ranked: Any = answering._speculation(None, loaded, request, [], answering.Options(timed=False))  # type: ignore[arg-type]
    assert alone.depth.learn and not ranked.depth.learn
    assert alone.depth.price is loaded.prices  # the model's answers learn into one record
