"""The one MLX thread: load/unload models, generate, stop strings, cancel, prompt cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx_lm import load as mlx_load
from mlx_lm import stream_generate
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

from tholos_mlx import machine
from tholos_mlx.channel import Channel, Delta, Finished, Started
from tholos_mlx.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    NoModelLoaded,
    ServerError,
    ServiceUnavailable,
    TholosError,
)
from tholos_mlx.prompt_cache import PromptCache, cache_tokens
from tholos_mlx.schema import ChatMessage, ChatRequest, Usage
from tholos_mlx.stops import StopMatcher
from tholos_mlx.tiers import ModelEntry

log = logging.getLogger("tholos.engine")

DEFAULT_CONTEXT = 4096
# A plain ChatML template for model folders that ship none.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_MB = 1024 * 1024


class _Cancelled(Exception):
    """Raised from the prefill progress callback to abandon a request's prompt."""


@dataclass
class _Loaded:
    entry: ModelEntry
    model: Any
    tokenizer: Any
    context: int
    weights_bytes: int


def weights_bytes(folder: Path) -> int:
    """Size of a model folder's weight files: about the memory it needs once loaded."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def memory_limit_bytes() -> int:
    """The memory MLX may use: Metal's recommended working set on a Mac, RAM elsewhere."""
    info: dict[str, Any] = {}
    try:
        info = dict(mx.device_info())
    except Exception:  # older MLX: no device_info
        pass
    for key in ("max_recommended_working_set_size", "memory_size"):
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return machine.total_memory_bytes()


def _context_length(folder: Path) -> int:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_CONTEXT
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
        value = config.get(key) or (config.get("text_config") or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT


def _precheck(folder: Path) -> None:
    """Fail early, before unloading anything, on a folder that cannot possibly load."""
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"config.json unreadable ({exc.__class__.__name__})") from None
    if not any(folder.glob("*.safetensors")):
        raise ValueError("no *.safetensors weights in the folder")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ValueError("no tokenizer.json or tokenizer.model in the folder")


class Engine:
    """Owns MLX: every model, cache and generation call runs on its single thread."""

    def __init__(self, *, prompt_cache_mb: int | None = None, log_prompts: bool = False) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="tholos-engine", daemon=True)
        self._loaded: _Loaded | None = None
        self._current: Channel | None = None
        self._prompt_cache_mb = prompt_cache_mb
        self._cache = PromptCache(0)
        self._log_prompts = log_prompts
        self._stopping = False
        # A cancel is seen between prefill chunks. On the CPU (~6 prompt tokens/s here) chunks of
        # 64 keep that near 10 s at no cost in speed (measured: 64 to 2048 within noise);
        # on the GPU mlx-lm's own 2048 take well under a second.
        self._prefill_step = 2048 if mx.default_device() == mx.gpu else 64

    # -- called from any thread --
    @property
    def loaded(self) -> str | None:
        """The id of the model in memory, if any."""
        current = self._loaded
        return current.entry.id if current else None

    def start(self) -> None:
        """Start the engine thread."""
        self._thread.start()

    def begin_shutdown(self) -> None:
        """Shutdown: stop the running generation within a token and refuse queued ones."""
        self._stopping = True
        current = self._current
        if current is not None:
            current.cancel()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running generation, fail what is queued, and end the thread."""
        self.begin_shutdown()
        self._jobs.put(None)
        self._thread.join(timeout)

    def load(self, entry: ModelEntry) -> None:
        """Load a model on the engine thread and wait for it (startup's --model)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def job() -> None:
            try:
                self._switch(entry)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        self._jobs.put(job)
        done.result()

    def submit(
        self, request: ChatRequest, entry: ModelEntry | None, on_done: Callable[[], None]
    ) -> Channel:
        """Queue a generation; its events arrive on the returned channel; on_done runs on the loop."""
        loop = asyncio.get_running_loop()
        channel = Channel(loop)

        def job() -> None:
            self._current = channel
            try:
                self._run(request, entry, channel)
            except TholosError as exc:
                channel.put(exc)
            except BaseException as exc:
                log.exception("generation failed: %s", exc.__class__.__name__)
                channel.put(ServerError(f"The engine failed ({exc.__class__.__name__})."))
            finally:
                self._current = None
                channel.close()
                loop.call_soon_threadsafe(on_done)

        self._jobs.put(job)
        return channel

    # -- the engine thread --
    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            job()  # once stopping, a queued request fails fast with 503 and still reports done
        self._unload()

    def _switch(self, entry: ModelEntry) -> None:
        """Make `entry` the loaded model, freeing the old one first (never two in memory)."""
        current = self._loaded
        if current is not None and (current.entry.id, current.entry.path) == (entry.id, entry.path):
            current.entry = entry  # a new tier in tiers.toml needs no reload
            return
        need = weights_bytes(entry.path)
        limit = memory_limit_bytes()
        if limit and need > limit:
            raise ServiceUnavailable(
                f"Model `{entry.id}` needs {need / 2**30:.1f} GiB for its weights, more than the "
                f"{limit / 2**30:.1f} GiB MLX can use on this machine.",
                code="model_too_large",
            )
        try:
            _precheck(entry.path)
        except ValueError as exc:
            raise ServiceUnavailable(
                f"Model `{entry.id}` cannot be loaded: {exc}.", code="model_load_failed"
            ) from None
        previous = current.entry if current else None
        current = None  # drop our reference too, or the old weights survive the unload
        self._unload()
        try:
            self._load(entry)
        except Exception as exc:
            log.error("loading model %r failed: %s: %s", entry.id, exc.__class__.__name__, exc)
            if previous is not None:
                try:
                    self._load(previous)
                except Exception as again:
                    log.error("reloading %r failed too: %s", previous.id, again)
            raise ServiceUnavailable(
                f"Model `{entry.id}` failed to load ({exc.__class__.__name__})."
                + (f" `{previous.id}` is still loaded." if previous and self.loaded else ""),
                code="model_load_failed",
            ) from None

    def _load(self, entry: ModelEntry) -> None:
        started = time.perf_counter()
        loaded = mlx_load(str(entry.path))
        model, tokenizer = loaded[0], loaded[1]
        size = weights_bytes(entry.path)
        self._loaded = _Loaded(entry, model, tokenizer, _context_length(entry.path), size)
        budget_mb = self._prompt_cache_mb
        if (
            budget_mb is None
        ):  # default: as much as the weights, at least 256 MiB, at most 1/8 of memory
            budget = max(256 * _MB, size)
            budget = min(budget, max(memory_limit_bytes() // 8, 64 * _MB))
        else:
            budget = budget_mb * _MB
        self._cache = PromptCache(budget)
        log.info(
            "loaded %s (%.0f MiB, context %d) in %.1f s; prompt cache %d MiB",
            entry.id,
            size / _MB,
            self._loaded.context,
            time.perf_counter() - started,
            budget // _MB,
        )

    def _unload(self) -> None:
        if self._loaded is None:
            return
        log.info("unloading %s", self._loaded.entry.id)
        self._loaded = None
        self._cache = PromptCache(0)
        gc.collect()
        mx.clear_cache()  # else MLX keeps the freed buffers (mlx-lm issue 1757)

    def _tokenize(self, loaded: _Loaded, messages: tuple[ChatMessage, ...]) -> list[int]:
        tok = loaded.tokenizer
        turns = [{"role": m.role, "content": m.content} for m in messages]
        extra: dict[str, Any] = {}
        if not getattr(tok, "chat_template", None):
            extra["chat_template"] = FALLBACK_TEMPLATE
        try:
            text = tok.apply_chat_template(
                turns, add_generation_prompt=True, tokenize=False, **extra
            )
        except Exception as exc:  # jinja's raise_exception(): the template refuses these messages
            raise InvalidRequest(
                f"The model's chat template refused these messages: {exc}", param="messages"
            ) from None
        ids: list[int] = list(tok.encode(text, add_special_tokens=False))
        bos = getattr(tok, "bos_token_id", None)
        if getattr(tok, "add_bos_token", False) and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def _run(self, request: ChatRequest, entry: ModelEntry | None, channel: Channel) -> None:
        if self._stopping:
            raise ServiceUnavailable("The server is shutting down.", retry_after=5)
        if channel.cancelled:
            return
        if entry is not None:
            self._switch(entry)
        loaded = self._loaded
        if loaded is None:
            raise NoModelLoaded()
        prompt = self._tokenize(loaded, request.messages)
        room = loaded.context - len(prompt)
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {loaded.context} tokens; your messages "
                f"take {len(prompt)}. Shorten them.",
                param="messages",
            )
        max_tokens = room if request.max_tokens is None else min(request.max_tokens, room)
        cache, cached = self._cache.take(prompt)
        if cache is None:
            cache = make_prompt_cache(loaded.model)
        channel.put(Started(loaded.entry.id, len(prompt), cached))
        if self._log_prompts:
            log.info("prompt: %r", [(m.role, m.content) for m in request.messages])
        self._generate(loaded, request, prompt, cached, cache, max_tokens, channel)

    def _generate(
        self,
        loaded: _Loaded,
        request: ChatRequest,
        prompt: list[int],
        cached: int,
        cache: list[Any],
        max_tokens: int,
        channel: Channel,
    ) -> None:
        if request.seed is not None:
            mx.random.seed(request.seed & (2**64 - 1))
        sampler = make_sampler(temp=request.temperature, top_p=request.top_p)
        stops = StopMatcher(request.stop)
        eos = set(loaded.tokenizer.eos_token_ids)
        generated: list[int] = []
        finish = "length"
        answer: list[str] = []  # kept only with --log-prompts

        def emit(text: str) -> None:
            if text:
                channel.put(Delta(text))
                if self._log_prompts:
                    answer.append(text)

        def progress(_done: int, _total: int) -> None:
            if channel.cancelled:
                raise _Cancelled

        started = time.perf_counter()
        steps = stream_generate(
            loaded.model,
            loaded.tokenizer,
            mx.array(prompt[cached:]),
            max_tokens=max_tokens,
            sampler=sampler,
            prompt_cache=cache,
            prompt_progress_callback=progress,
            prefill_step_size=self._prefill_step,
        )
        try:
            for step in steps:
                generated.append(step.token)
                if step.finish_reason is not None:
                    finish = step.finish_reason
                if step.text:
                    text, hit = stops.feed(step.text)
                    emit(text)
                    if hit:
                        finish = "stop"
                        break
                if channel.cancelled:
                    break
            else:
                emit(stops.flush())
        except _Cancelled:
            pass
        finally:
            steps.close()
            self._keep_cache(prompt + generated, cache)
        if channel.cancelled:
            log.info("%s: cancelled after %d tokens", loaded.entry.id, len(generated))
            return
        completion = len(generated) - (
            1 if generated and generated[-1] in eos and finish == "stop" else 0
        )
        elapsed = time.perf_counter() - started
        log.info(
            "%s: %d prompt tokens (%d cached), %d generated, %.1f s, finish %s",
            loaded.entry.id,
            len(prompt),
            cached,
            completion,
            elapsed,
            finish,
        )
        if self._log_prompts:
            log.info("answer: %r", "".join(answer))
        channel.put(Finished(finish, Usage(len(prompt), completion, cached)))

    def _keep_cache(self, tokens: list[int], cache: list[Any]) -> None:
        held = cache_tokens(cache)
        if held is not None and held > len(tokens) and all(c.is_trimmable() for c in cache):
            # Cancelled as the first token was computed: the cache ran ahead of what we know.
            for c in cache:
                c.trim(held - len(tokens))
            held = cache_tokens(cache)
        if held is None or held == 0 or held > len(tokens):
            return
        self._cache.put(tokens[:held], cache)
