"""The one MLX thread: a queue of jobs, each one request from admission to its last event.

Everything MLX (the model slot, caches, generation) runs on this thread; the event loop only
submits jobs and reads their events from a Channel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import load as load_tokenizer

from tholos_mlx import timings
from tholos_mlx.answer import AnswerSplitter, Markers
from tholos_mlx.channel import Channel
from tholos_mlx.chat_prompt import own_length_check, prompt_ids, tool_format
from tholos_mlx.drafting import MARGIN, Mode, prediction_usage, speculation
from tholos_mlx.errors import (
    ContextLengthExceeded,
    NoModelLoaded,
    ServerError,
    ServiceUnavailable,
    TholosError,
)
from tholos_mlx.events import Delta, Event, Finished, FinishReason, Started
from tholos_mlx.generation import AfterThinking, Constraint, generate
from tholos_mlx.model_slot import Loaded, ModelSlot
from tholos_mlx.prompt_cache import cache_tokens
from tholos_mlx.prompt_cache_disk import DiskCache
from tholos_mlx.request import GenerationRequest, Usage
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.timings import Timings

log = logging.getLogger("tholos.engine")

SHUTDOWN_WAIT_S = 15.0  # at SIGTERM: finish the running token, save the prompt cache, unload


class Engine:
    """Owns MLX: every model, cache and generation call runs on its single thread."""

    def __init__(
        self,
        *,
        prompt_cache_mb: int | None = None,
        log_prompts: bool = False,
        idle_unload: float = 0.0,
        memory_limit: int | None = None,
        kv_bits: int | None = None,
        disk_cache: DiskCache | None = None,
        slot: ModelSlot | None = None,
        default_max_tokens: int | None = None,
        speculative: Mode = "ngram",
        num_draft_tokens: int = 4,
    ) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="tholos-engine", daemon=True)
        self._slot = slot or ModelSlot(
            prompt_cache_mb=prompt_cache_mb,
            memory_limit=memory_limit,
            kv_bits=kv_bits,
            disk=disk_cache,
        )
        self._current: Channel | None = None
        self._log_prompts = log_prompts
        self._default_max_tokens = default_max_tokens  # None: as many as fit
        self._speculative, self._num_draft_tokens = speculative, num_draft_tokens
        self._undraftable: set[str] = set()  # models whose caches cannot undo a draft: said once
        self._stopping = False
        self._idle_unload = idle_unload  # seconds; 0 never
        self._idle_since = time.monotonic()  # when the last job ended
        self._save_by: float | None = None  # the shutdown deadline for the disk prompt cache
        self._tokenizers: dict[Path, Any] = {}  # count_tokens for models not loaded, by folder

    # -- called from any thread --
    @property
    def loaded(self) -> str | None:
        """The id of the model in memory, if any."""
        return self._slot.loaded_id

    @property
    def last_loaded(self) -> str | None:
        """The model in memory, else the one idle unload freed: a request naming none reloads it."""
        return self._slot.last_id

    def start(self) -> None:
        """Start the engine thread."""
        self._thread.start()

    def begin_shutdown(self) -> None:
        """Shutdown: stop the running generation within a token and refuse queued ones."""
        self._stopping = True
        current = self._current
        if current is not None:
            current.cancel()

    def stop(self, timeout: float = SHUTDOWN_WAIT_S) -> None:
        """Cancel the running generation, fail what is queued, save the prompt cache, end the thread."""
        self.begin_shutdown()
        self._save_by = time.monotonic() + timeout * 0.8  # leave time to free the model
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the engine thread did not finish within %.0f s", timeout)

    def load(self, entry: ModelEntry) -> None:
        """Load a model on the engine thread and wait for it (startup's --model)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def job() -> None:
            try:
                self._slot.switch(entry)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        self._jobs.put(job)
        done.result()

    def submit(
        self,
        request: GenerationRequest,
        entry: ModelEntry | None,
        on_done: Callable[[], None],
        arrived: float | None = None,
    ) -> Channel:
        """Queue a generation; its events arrive on the returned channel; on_done runs on the loop.

        `arrived` is when the HTTP layer had the request (timings.now()), for the timing line."""
        loop = asyncio.get_running_loop()
        channel = Channel(loop)
        times = Timings(arrived, timings.now())

        def job() -> None:
            self._current = channel
            try:
                self._run(request, entry, channel, times)
            except TholosError as exc:
                channel.put(exc)
            except BaseException as exc:
                log.exception("generation failed: %s", exc.__class__.__name__)
                channel.put(ServerError(f"The engine failed ({exc.__class__.__name__})."))
            finally:
                self._current = None
                channel.close()
                _call_soon(loop, on_done)

        self._jobs.put(job)
        return channel

    async def count_tokens(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        """The prompt's length as submit() would render it, in a worker thread: no turn, no weights.

        The loaded model's tokenizer counts for it; a named model that is not loaded gets only
        its tokenizer read (once per folder), never its weights.
        """
        loaded = self._slot.current
        if entry is None and loaded is None:
            entry = self._slot.last  # idle unload freed it: count with its tokenizer
            if entry is None:
                raise NoModelLoaded()
        tools = request.tools if request.tool_choice.mode != "none" else ()

        def count() -> int:
            if loaded is not None and (
                entry is None or (loaded.entry.id, loaded.entry.path) == (entry.id, entry.path)
            ):
                return len(
                    prompt_ids(
                        loaded.tokenizer,
                        request.messages,
                        tools,
                        loaded.tools,
                        request.continue_final,
                    )
                )
            assert entry is not None
            tokenizer = self._tokenizers.get(entry.path)
            if tokenizer is None:
                try:
                    tokenizer = own_length_check(load_tokenizer(entry.path))
                except Exception as exc:
                    raise ServiceUnavailable(
                        f"Model `{entry.id}`'s tokenizer cannot be read "
                        f"({exc.__class__.__name__}).",
                        code="model_load_failed",
                    ) from None
                self._tokenizers[entry.path] = tokenizer
            return len(
                prompt_ids(
                    tokenizer,
                    request.messages,
                    tools,
                    tool_format(tokenizer),
                    request.continue_final,
                )
            )

        return await asyncio.to_thread(count)

    # -- the engine thread --
    def _main(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_left())
            except queue.Empty:  # nothing queued or running for --idle-unload seconds
                job = self._unload_idle
            if job is None:
                break
            try:
                job()  # once stopping, a queued request fails fast with 503 and still reports done
            except Exception as exc:  # never let the thread die: every queued request would hang
                log.error("engine job ended abnormally: %s", exc.__class__.__name__, exc_info=exc)
            self._idle_since = time.monotonic()
        self._slot.unload(self._save_by)

    def _idle_left(self) -> float | None:
        """Seconds until idle unload is due; None: wait for a job however long it takes."""
        if self._idle_unload <= 0 or self._slot.current is None or self._stopping:
            return None
        left = max(0.0, self._idle_since + self._idle_unload - time.monotonic())
        return None if left >= threading.TIMEOUT_MAX else left  # queue.get overflows past it

    def _unload_idle(self) -> None:
        """Free the model after --idle-unload: its prompt cache goes to disk, memory back to the OS."""
        if self._slot.current is None or self._stopping:
            return
        log.info("idle for %.0f s", self._idle_unload)
        self._slot.unload()

    def _model_for(self, entry: ModelEntry | None) -> Loaded:
        """The named model, else the loaded one, else the last one (idle unload freed it)."""
        if entry is not None:
            return self._slot.switch(entry)
        if self._slot.current is not None:
            return self._slot.current
        if self._slot.last is not None:
            return self._slot.switch(self._slot.last)
        raise NoModelLoaded()

    def _run(
        self,
        request: GenerationRequest,
        entry: ModelEntry | None,
        channel: Channel,
        times: Timings,
    ) -> None:
        if self._stopping:
            raise ServiceUnavailable("The server is shutting down.", retry_after=5)
        if channel.cancelled:
            return
        loaded = self._model_for(entry)
        tools = request.tools if request.tool_choice.mode != "none" else ()
        times.started = timings.now()  # after any model load: queue_ms includes it
        prompt = prompt_ids(
            loaded.tokenizer, request.messages, tools, loaded.tools, request.continue_final
        )
        times.prompted = timings.now()
        room = loaded.context - len(prompt)
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {loaded.context} tokens, the answer "
                f"included; your messages take {len(prompt)}"
                + (", which leaves no room for an answer" if room == 0 else "")
                + ". Shorten them.",
                param="messages",
                tokens=len(prompt),
                context=loaded.context,
            )
        # The matching cache first: the memory guard may then evict others, never this one.
        cache, cached = self._slot.cache.take(prompt)
        try:
            # A request that names no limit stops at the cap (issue 19: a 2,186-token runaway).
            cap = self._default_max_tokens if request.max_tokens is None else None
            answer_room = min(room, cap) if cap is not None else room
            max_tokens = self._slot.answer_tokens(
                loaded, len(prompt), request.max_tokens, answer_room
            )
            constraint = _constraint(loaded, request)  # a schema it cannot compile: a 400, here
        except TholosError:
            if cache is not None:  # refused: the conversation keeps its cache
                self._slot.cache.put(prompt[:cached], cache)
            raise
        if constraint is not None and _opens_thinking(loaded, prompt):
            tok = loaded.tokenizer
            constraint = AfterThinking(constraint, tok.think_end_tokens, tok.eos_token_ids)
        if cache is None:
            cache = make_prompt_cache(loaded.model)
        channel.put(Started(loaded.entry.id, len(prompt), cached))
        if self._log_prompts:
            log.info("prompt: %r", [(m.role, m.content) for m in request.messages])
        self._generate(
            loaded, request, prompt, cached, cache, max_tokens, constraint, channel, times
        )

    def _generate(
        self,
        loaded: Loaded,
        request: GenerationRequest,
        prompt: list[int],
        cached: int,
        cache: list[Any],
        max_tokens: int,
        constraint: Constraint | None,
        channel: Channel,
        times: Timings,
    ) -> None:
        if request.seed is not None:
            mx.random.seed(request.seed & (2**64 - 1))
        answer: list[str] = []  # kept only with --log-prompts
        put: Callable[[Event], None] = channel.put
        if self._log_prompts:

            def logged(ev: Event) -> None:
                if isinstance(ev, Delta):
                    answer.append(ev.text)
                channel.put(ev)

            put = logged

        # A JSON answer ends where its grammar does: a stop string must not cut it short.
        stops = request.stop if request.response_format.kind == "text" else ()
        splitter = AnswerSplitter(put, stops, _markers(loaded, request, prompt))
        times.generating = started = timings.now()
        predicted = _tokens(loaded, request.prediction)
        spec = speculation(
            self._speculative,
            self._num_draft_tokens,
            greedy=request.temperature == 0,
            prediction=predicted,
            margin=MARGIN,
        )
        gen = None
        try:
            gen = generate(
                loaded.model,
                prompt,
                cache,
                cached=cached,
                detokenizer=loaded.detokenizers(),
                emit=splitter.feed,
                sampler=make_sampler(
                    temp=request.temperature, top_p=request.top_p, top_k=request.top_k
                ),
                max_tokens=max_tokens,
                eos=loaded.tokenizer.eos_token_ids,
                constraint=constraint,
                cancelled=lambda: channel.cancelled,
                prefill=loaded.prefill,
                kv_bits=self._slot.kv_bits,
                speculation=spec,
            )
        finally:
            if gen is not None and cache_tokens(cache) == len(gen.cache_tokens):
                self._slot.cache.put(gen.cache_tokens, cache)
        if gen.finish == "cancelled" or channel.cancelled:
            log.info("%s: cancelled after %d tokens", loaded.entry.id, len(gen.generated))
            return
        stopped_by_text = splitter.stop_sequence is not None
        if not stopped_by_text:
            splitter.finish(cut=gen.finish == "length")
        finish: FinishReason = gen.finish
        # Calls end the answer; a further call cut by max_tokens was dropped whole, so what the
        # client gets is complete calls, and it should act on them, not treat them as cut.
        whole_calls = finish == "stop" or (finish == "length" and splitter.dropped_cut_call)
        if splitter.calls and whole_calls and not stopped_by_text:
            finish = "tool_calls"
        accepted, rejected = prediction_usage(predicted, gen.generated)
        usage = Usage(len(prompt), len(gen.generated), cached, accepted, rejected)
        times.first_token, times.last_token = gen.first_token_at, gen.last_token_at
        times.tokens = len(gen.generated)
        if spec is not None:
            times.drafted, times.accepted = spec.drafted, spec.accepted
            if spec.notes and loaded.entry.id not in self._undraftable:
                self._undraftable.add(loaded.entry.id)
                log.info("%s: drafts nothing: %s", loaded.entry.id, spec.notes[0])
        log.info(
            "%s: %d prompt tokens (%d cached), %d generated, %.1f s, finish %s; %s",
            loaded.entry.id,
            len(prompt),
            cached,
            usage.completion_tokens,
            timings.now() - started,
            finish,
            times.line(),
        )
        if self._log_prompts:
            log.info("answer: %r", "".join(answer))
        channel.put(Finished(finish, usage, splitter.stop_sequence))


def _tokens(loaded: Loaded, text: str | None) -> list[int]:
    """A prediction's token ids, as the answer would spell it (no special tokens)."""
    if not text:
        return []
    return list(loaded.tokenizer.encode(text, add_special_tokens=False))


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run callback on the loop; at shutdown the loop may be closed already: nobody waits then."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def _markers(loaded: Loaded, request: GenerationRequest, prompt: list[int]) -> Markers:
    """What the splitter watches for in this answer: thinking, and tool calls when tools are on."""
    tok = loaded.tokenizer
    thinking = bool(getattr(tok, "has_thinking", False))
    think_start = tok.think_start if thinking else None
    think_end = tok.think_end if thinking else None
    opened = _opens_thinking(loaded, prompt)
    calls = request.tools and request.tool_choice.mode != "none"
    parser = getattr(tok, "tool_parser", None) if loaded.tools.native else None
    return Markers(
        think_end=think_end,
        thinking_first=opened,
        think_start=think_start,
        call_start=loaded.tools.start if calls else None,
        call_end=loaded.tools.end if calls else None,
        one_call=not request.parallel_tool_calls,
        parse_call=(lambda text: parser(text, None)) if parser is not None else None,
    )


def _opens_thinking(loaded: Loaded, prompt: list[int]) -> bool:
    """The template opened a thinking block it did not close: the answer starts inside it."""
    tok = loaded.tokenizer
    if not getattr(tok, "has_thinking", False):
        return False
    starts = list(getattr(tok, "think_start_tokens", None) or ())
    ends = list(getattr(tok, "think_end_tokens", None) or ())
    return bool(starts) and _rfind(prompt, starts) > _rfind(prompt, ends)


def _rfind(tokens: list[int], seq: list[int]) -> int:
    n = len(seq)
    for i in range(len(tokens) - n, -1, -1):
        if tokens[i : i + n] == seq:
            return i
    return -1


def _constraint(loaded: Loaded, request: GenerationRequest) -> Constraint | None:
    """The grammar this request's answer must follow, if any (compiled once per schema)."""
    fmt, choice = request.response_format, request.tool_choice
    wants_tools = bool(request.tools) and choice.mode != "none"
    if fmt.kind == "text" and not wants_tools:
        return None
    from tholos_mlx.constrain import Grammars, ToolMarkers

    if loaded.grammars is None:
        loaded.grammars = Grammars(loaded.tokenizer)
    grammars: Grammars = loaded.grammars
    markers = ToolMarkers(loaded.tools.start, loaded.tools.end)
    tools = request.tools if wants_tools else ()
    grammars.check(fmt, tools, choice, request.parallel_tool_calls, markers)
    if wants_tools and choice.mode in ("required", "function"):
        return grammars.for_tool_call(tools, choice, request.parallel_tool_calls, markers)
    if wants_tools:  # "auto": free text (or the JSON format) until the model starts a call
        return grammars.lazy_tool_call(tools, request.parallel_tool_calls, markers, fmt)
    return grammars.for_format(fmt)
