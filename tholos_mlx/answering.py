"""One request's answer, on the engine thread: from the model slot and a request to events.

The engine's runner (engine.Runner): the model, the prompt, the context check, the prompt
cache taken and put back, the token budget, the grammar, thinking, generation, the finish
reason, and the one summary line with the request's timings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

from tholos_mlx import timings
from tholos_mlx.answer import AnswerSplitter, Markers
from tholos_mlx.channel import Sink
from tholos_mlx.chat_prompt import opens_thinking, prompt_ids
from tholos_mlx.constrain import Grammars, ToolMarkers, choose
from tholos_mlx.draft_model import DraftSlot
from tholos_mlx.drafting import MARGIN, Mode, Speculation, prediction_usage, speculation
from tholos_mlx.errors import TholosError
from tholos_mlx.events import Delta, Event, Finished, Started
from tholos_mlx.generation import AfterThinking, Constraint, Generation, generate
from tholos_mlx.model_slot import Loaded, ModelSlot
from tholos_mlx.prompt_cache import cache_tokens
from tholos_mlx.request import GenerationRequest, Usage
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

log = logging.getLogger("tholos.engine")


@dataclass(frozen=True)
class Options:
    """How every answer is made, fixed at start (serve's flags)."""

    log_prompts: bool = False  # log the prompt and answer text (never by default)
    # The cap of an answer that names none (issue 19: a 2,186-token runaway); None: all that fits.
    default_max_tokens: int | None = None
    speculative: Mode = "ngram"  # where drafts come from (--speculative)
    num_draft_tokens: int = 4  # the deepest draft verified in one pass
    draft: DraftSlot | None = None  # --draft-model, with --speculative draft
    # Choices learned from this process's own timings (the price of a wider draft pass); off
    # across ranks (serve --hostfile), where every rank must draft exactly as deep as the rest.
    timed: bool = True


class _Reserved(NamedTuple):
    """What a request holds once admitted: its cache, its budget and its grammar."""

    cache: list[Any]
    cached: int  # prompt tokens the cache already holds
    max_tokens: int
    constraint: Constraint | None


def answer(
    slot: ModelSlot,
    request: GenerationRequest,
    entry: ModelEntry | None,
    out: Sink,
    times: Timings,
    options: Options = Options(),
) -> None:
    """Answer `request` with the model it names (None: the loaded one): Started, the answer's
    events, then Finished on `out`; nothing after a cancel; a TholosError raised as its refusal."""
    if out.cancelled:  # dropped before its turn came: nothing to do
        return
    loaded = slot.for_request(entry)
    tools = request.tools if request.tool_choice.mode != "none" else ()
    times.started = timings.now()  # after any model load: queue_ms includes it
    prompt = prompt_ids(
        loaded.tokenizer, request.messages, tools, loaded.tools, request.continue_final
    )
    times.prompted = timings.now()
    thinking = opens_thinking(loaded.tokenizer, prompt)
    predicted = _tokens(loaded, request.prediction)
    # Before the reservation: a draft model loaded now is counted by the memory guard.
    spec = _speculation(slot, loaded, request, predicted, options)
    held = _reserve(slot, loaded, request, prompt, thinking, options)
    out.put(Started(loaded.entry.id, len(prompt), held.cached))
    if options.log_prompts:
        log.info("prompt: %r", [(m.role, m.content) for m in request.messages])
    said: list[str] = []  # kept only with --log-prompts
    put = _keeping(out, said) if options.log_prompts else out.put
    # A JSON answer ends where its grammar does: a stop string must not cut it short.
    stops = request.stop if request.response_format.kind == "text" else ()
    splitter = AnswerSplitter(put, stops, _markers(loaded, request, thinking))
    if request.seed is not None:
        mx.random.seed(request.seed & (2**64 - 1))
    times.generating = timings.now()
    gen = None
    try:
        gen = generate(
            loaded.model,
            prompt,
            held.cache,
            cached=held.cached,
            detokenizer=loaded.detokenizers(),
            emit=splitter.feed,
            sampler=make_sampler(
                temp=request.temperature, top_p=request.top_p, top_k=request.top_k
            ),
            max_tokens=held.max_tokens,
            eos=loaded.tokenizer.eos_token_ids,
            constraint=held.constraint,
            cancelled=lambda: out.cancelled,
            prefill=loaded.prefill,
            kv_bits=slot.kv_bits,
            speculation=spec,
        )
    finally:
        if gen is not None and cache_tokens(held.cache) == len(gen.cache_tokens):
            slot.cache.put(gen.cache_tokens, held.cache)
    reason = gen.finish
    if reason == "cancelled" or out.cancelled:
        log.info("%s: cancelled after %d tokens", loaded.entry.id, len(gen.generated))
        return
    finish = splitter.end(reason)
    accepted, rejected = prediction_usage(predicted, gen.generated)
    usage = Usage(len(prompt), len(gen.generated), held.cached, accepted, rejected)
    if spec is not None:
        times.drafted, times.accepted = spec.drafted, spec.accepted
        if spec.notes and not loaded.undraftable_said:
            loaded.undraftable_said = True
            log.info("%s: drafts nothing: %s", loaded.entry.id, spec.notes[0])
    _log_summary(loaded, usage, gen, finish, times)
    if options.log_prompts:
        log.info("answer: %r", "".join(said))
    out.put(Finished(finish, usage, splitter.stop_sequence))


def _speculation(
    slot: ModelSlot,
    loaded: Loaded,
    request: GenerationRequest,
    predicted: list[int],
    options: Options,
) -> Speculation | None:
    """This answer's drafting under --speculative: prompt lookup, or the draft model (where its
    vocabulary is this model's); a prediction is drafted from first either way."""
    source = None
    if options.speculative == "draft" and options.draft is not None:
        source = options.draft.for_answer(slot, loaded.tokenizer)
        if source is None:
            if not loaded.undraftable_said:
                loaded.undraftable_said = True
                log.warning(
                    "%s: drafts nothing: draft model %s has another vocabulary",
                    loaded.entry.id,
                    options.draft.entry.id,
                )
            return None
    return speculation(
        options.speculative,
        options.num_draft_tokens,
        greedy=request.temperature == 0,
        prediction=predicted,
        margin=MARGIN,
        learn=options.timed,
        source=source,
        prices=loaded.prices,
    )


def _tokens(loaded: Loaded, text: str | None) -> list[int]:
    """A prediction's token ids, as the answer would spell it (no special tokens)."""
    if not text:
        return []
    return list(loaded.tokenizer.encode(text, add_special_tokens=False))


def _reserve(
    slot: ModelSlot,
    loaded: Loaded,
    request: GenerationRequest,
    prompt: list[int],
    thinking: bool,
    options: Options,
) -> _Reserved:
    """The context check, the prompt cache, the token budget and the grammar, or the refusal.

    The matching cache is taken first: the memory guard may then evict others, never this one;
    a refused request gives it back, so the conversation keeps its cache."""
    room = slot.room(loaded, len(prompt))
    cache, cached = slot.cache.take(prompt)
    try:
        cap = options.default_max_tokens if request.max_tokens is None else None
        max_tokens = slot.answer_tokens(
            loaded, len(prompt), request.max_tokens, room if cap is None else min(room, cap)
        )
        constraint = _constraint(loaded, request)  # a schema it cannot compile: a 400, here
    except TholosError:
        if cache is not None:
            slot.cache.put(prompt[:cached], cache)
        raise
    if constraint is not None and thinking:  # the grammar starts where the thinking ends
        tok = loaded.tokenizer
        constraint = AfterThinking(constraint, tok.think_end_tokens, tok.eos_token_ids)
    if cache is None:
        cache = make_prompt_cache(loaded.model)
    return _Reserved(cache, cached, max_tokens, constraint)


def _keeping(out: Sink, said: list[str]) -> Callable[[Event], None]:
    """out.put that also keeps the answer's text, for --log-prompts."""

    def put(ev: Event) -> None:
        if isinstance(ev, Delta):
            said.append(ev.text)
        out.put(ev)

    return put


def _log_summary(loaded: Loaded, usage: Usage, gen: Generation, finish: str, t: Timings) -> None:
    """The request's one line: sizes, time, finish and the timing figures (never any text)."""
    t.first_token, t.last_token, t.tokens = (
        gen.first_token_at,
        gen.last_token_at,
        len(gen.generated),
    )
    log.info(
        "%s: %d prompt tokens (%d cached), %d generated, %.1f s, finish %s; %s",
        loaded.entry.id,
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.completion_tokens,
        timings.now() - t.generating,
        finish,
        t.line(),
    )


def _constraint(loaded: Loaded, request: GenerationRequest) -> Constraint | None:
    """The request's grammar, from the model's Grammars (made on first use)."""

    def grammars() -> Grammars:
        if loaded.grammars is None:
            loaded.grammars = Grammars(loaded.tokenizer)
        made: Grammars = loaded.grammars
        return made

    return choose(request, grammars, ToolMarkers(loaded.tools.start, loaded.tools.end))


def _markers(loaded: Loaded, request: GenerationRequest, thinking_first: bool) -> Markers:
    """What the splitter watches for in this answer: thinking, and tool calls when tools are on."""
    tok: Any = loaded.tokenizer
    thinking = bool(getattr(tok, "has_thinking", False))
    calls = request.tools and request.tool_choice.mode != "none"
    parser = getattr(tok, "tool_parser", None) if loaded.tools.native else None
    return Markers(
        think_end=tok.think_end if thinking else None,
        thinking_first=thinking_first,
        think_start=tok.think_start if thinking else None,
        call_start=loaded.tools.start if calls else None,
        call_end=loaded.tools.end if calls else None,
        one_call=not request.parallel_tool_calls,
        parse_call=(lambda text: parser(text, None)) if parser is not None else None,
    )
