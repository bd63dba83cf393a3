"""The one model in memory: load, switch with rollback, unload, and what is sized from the model.

Used only on the engine thread. A switch frees the old model before the new one loads, so
memory never holds both; a failed load puts the old one back.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import mlx.core as mx
from mlx_lm import load as mlx_load

from tholos_mlx import machine
from tholos_mlx.chat_prompt import ToolFormat, own_length_check, tool_format
from tholos_mlx.detokenize import DetokenizerFactory
from tholos_mlx.drafting import Prices
from tholos_mlx.errors import (
    ContextLengthExceeded,
    InsufficientMemory,
    NoModelLoaded,
    ServiceUnavailable,
)
from tholos_mlx.generation import PREFILL_CHUNK_MAX, Prefill
from tholos_mlx.prompt_cache import PromptCache
from tholos_mlx.prompt_cache_disk import DiskCache, fingerprint
from tholos_mlx.tiers import ModelEntry

log = logging.getLogger("tholos.model")

DEFAULT_CONTEXT = 4096
_MB = 1024 * 1024
# The prompt cache's default budget: as much as the weights, within these bounds.
CACHE_FLOOR = 256 * _MB
CACHE_SHARE_OF_MEMORY = 8  # at most 1/8 of the memory MLX may use


def weights_bytes(folder: Path) -> int:
    """Size of a model folder's weight files: about the memory it needs once loaded."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _device_info() -> dict[str, Any]:
    """MLX's device facts: mx.device_info(), else (older MLX on a Mac) mx.metal.device_info()."""
    getters = [getattr(mx, "device_info", None)]
    metal = getattr(mx, "metal", None)
    if metal is not None and metal.is_available():
        getters.append(getattr(metal, "device_info", None))
    for get in getters:
        if get is None:
            continue
        try:
            info = dict(get())
        except Exception:  # an MLX without it, or a backend that cannot say
            continue
        if any(isinstance(info.get(k), int) for k in _LIMIT_KEYS):
            return info
    return {}


_LIMIT_KEYS = ("max_recommended_working_set_size", "memory_size")


def memory_limit_bytes() -> int:
    """The memory MLX may use: Metal's recommended working set on a Mac, RAM elsewhere."""
    info = _device_info()
    for key in _LIMIT_KEYS:
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return machine.total_memory_bytes()


def metal_working_set() -> int | None:
    """Metal's recommended working set, which mlx-lm wires for generation; None off Metal."""
    metal = getattr(mx, "metal", None)
    if metal is None or not metal.is_available():
        return None
    value = _device_info().get("max_recommended_working_set_size")
    return value if isinstance(value, int) and value > 0 else None


@dataclass
class Wiring:
    """mlx-lm's `wired_limit`, held from a model's load to its unload: on a Mac the weights stay
    wired instead of paging out. A no-op off Metal. Used on the engine thread only."""

    size: Callable[[], int | None] = metal_working_set  # the limit to wire; None: leave it
    set_limit: Callable[[int], int] = field(default=lambda n: int(mx.set_wired_limit(n)))
    restore: int | None = None  # the limit before ours, put back at unload

    def wire(self) -> None:
        """Raise the wired limit for the model just loaded (once; again only after unwire)."""
        if self.restore is not None:
            return
        size = self.size()
        if size is not None:
            self.restore = self.set_limit(size)

    def unwire(self) -> None:
        """Put the limit back, once MLX has finished every queued computation (as mlx-lm does)."""
        if self.restore is None:
            return
        mx.synchronize()
        self.set_limit(self.restore)
        self.restore = None


def mlx_memory() -> str:
    """MLX's own memory figures for the log: on a Mac, Metal buffers do not show in RSS."""
    active, peak = mx.get_active_memory() / _MB, mx.get_peak_memory() / _MB
    return f"MLX memory active {active:.0f} MiB, peak {peak:.0f} MiB"


def default_cache_budget(weights: int, limit: int) -> int:
    """Bytes for the prompt cache when --prompt-cache-mb is not given."""
    return min(max(CACHE_FLOOR, weights), max(limit // CACHE_SHARE_OF_MEMORY, 64 * _MB))


def read_config(folder: Path) -> dict[str, Any]:
    """The model's config.json, or {} when it cannot be read."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's fields: a multimodal config nests them in text_config."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def context_length(folder: Path) -> int:
    """The model's context window from config.json, or DEFAULT_CONTEXT."""
    config = _text_config(read_config(folder))
    found = _first_int(
        config, "max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"
    )
    return found or DEFAULT_CONTEXT


# -- the memory guard: weights + KV cache against the limit --

KV_GROUP_SIZE = 64  # generation.py quantizes the KV cache in groups of 64 (--kv-bits)
KV_SLACK_TOKENS = 256  # MLX grows a KV cache 256 tokens at a time: the last step's spare room
# A config without layer or head counts: assume a large model with full multi-head attention.
FALLBACK_LAYERS = 80
FALLBACK_WIDTH = 8192


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int, kv_bits: int | None) -> int:
    """KV cache bytes per token: 2 (K and V) x layers x KV heads x head dim x element size.

    A quantized element (--kv-bits) is bits/8 plus a scale and a bias per group of 64.
    """
    c = _text_config(config)
    layers = _first_int(c, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first_int(c, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _first_int(c, "num_key_value_heads", "n_head_kv", "num_kv_heads") or heads
    hidden = _first_int(c, "hidden_size", "n_embd", "d_model", "dim")
    head_dim = _first_int(c, "head_dim") or (hidden // heads if hidden and heads else None)
    if layers and kv_heads and head_dim:
        width = kv_heads * head_dim
    else:
        layers, width = layers or FALLBACK_LAYERS, hidden or FALLBACK_WIDTH
    element = float(dtype_bytes)
    if kv_bits is not None:
        element = kv_bits / 8 + 2 * dtype_bytes / KV_GROUP_SIZE
    return math.ceil(2 * layers * width * element)


def activation_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Transient bytes one prompt token takes while its prefill chunk runs through a layer.

    At a layer's widest point: the residual and the normed input (2 x hidden) and the MLP's
    gate, up and their product (3 x intermediate). Layers run one after another, so it does
    not grow with depth; the chunk's logits are never computed (only the KV cache is read)."""
    c = _text_config(config)
    hidden = _first_int(c, "hidden_size", "n_embd", "d_model", "dim") or FALLBACK_WIDTH
    inner = _first_int(c, "intermediate_size", "ffn_dim", "n_inner") or 4 * hidden
    return (2 * hidden + 3 * inner) * dtype_bytes


def model_kv_bytes_per_token(
    model: Any, config: dict[str, Any], dtype_bytes: int, kv_bits: int | None
) -> int:
    """KV bytes per token of a loaded model: measured where its layers allow, else the
    config's estimate."""
    return measured_kv_bytes_per_token(model, kv_bits) or kv_bytes_per_token(
        config, dtype_bytes, kv_bits
    )


def measured_kv_bytes_per_token(model: Any, kv_bits: int | None) -> int | None:
    """KV bytes per token as the model really caches them: one token through a fresh cache.

    Right where config.json misleads (DeepSeek's MLA caches a 576-wide latent, not 2 x heads x
    head dim); None when a layer is not a plain KV cache (sliding windows, state-space layers),
    and the config's estimate stands."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.array([[0]], dtype=mx.uint32), cache=cache)
    mx.eval([c.state for c in cache])
    total = 0.0
    for c in cache:
        keys: Any = c.keys if type(c) is KVCache else None
        if keys is None:
            return None
        values: Any = c.values
        per = (keys.nbytes + values.nbytes) / keys.shape[2]
        if kv_bits is not None:  # bits/8 plus a scale and a bias per group, for each element
            size = keys.dtype.size
            per = per / size * (kv_bits / 8 + 2 * size / KV_GROUP_SIZE)
        total += per
    del cache
    return math.ceil(total)


def widest_float_bytes(model: Any) -> int:
    """Bytes of the widest float type among the weights: activations, and so the KV cache, take it.

    (A model with float16 weights but float32 norms computes, and caches, in float32.)
    """
    from mlx.utils import tree_flatten

    params: Any = tree_flatten(model.parameters())
    sizes = [
        int(v.dtype.size)
        for _, v in params
        if isinstance(v, mx.array) and mx.issubdtype(v.dtype, mx.floating)
    ]
    return max(sizes, default=2)


@dataclass(frozen=True)
class MemoryPlan:
    """What a loaded model needs in memory per request, against the limit."""

    weights: int
    per_token: int
    limit: int
    prefill_per_token: int = 0  # activation bytes per token of a prefill chunk

    def need(self, tokens: int) -> int:
        """Bytes for the weights and a KV cache holding `tokens` tokens."""
        return self.weights + self.kv(tokens)

    def prefill(self, prompt: int) -> int:
        """Bytes while the prompt is read: the weights, its KV cache as MLX allocates it (in
        steps of 256 tokens) and the activations of the largest chunk it is read in."""
        steps = math.ceil(prompt / KV_SLACK_TOKENS) * KV_SLACK_TOKENS
        return self.weights + self.per_token * steps + self.activations(prompt)

    def activations(self, prompt: int) -> int:
        """Bytes of one prefill chunk's activations (chunks of at most PREFILL_CHUNK_MAX)."""
        return self.prefill_per_token * min(prompt, PREFILL_CHUNK_MAX)

    def peak(self, prompt: int, answer: int) -> int:
        """The most this request holds at once: while its prompt is read, or at its last token."""
        return max(self.prefill(prompt), self.need(prompt + answer))

    def kv(self, tokens: int) -> int:
        """Bytes of a KV cache holding `tokens` tokens, with MLX's spare room."""
        return self.per_token * (tokens + KV_SLACK_TOKENS)

    def most_tokens(self) -> int:
        """The most tokens (prompt and answer) a KV cache may hold within the limit."""
        return (self.limit - self.weights) // max(self.per_token, 1) - KV_SLACK_TOKENS


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def precheck(folder: Path) -> None:
    """Fail early, before unloading anything, on a folder that cannot possibly load."""
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"config.json unreadable ({exc.__class__.__name__})") from None
    if not any(folder.glob("*.safetensors")):
        raise ValueError("no *.safetensors weights in the folder")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ValueError("no tokenizer.json or tokenizer.model in the folder")


class Sharding(Protocol):
    """This process's part of a model split across ranks (sharding.Shards)."""

    count: int  # ranks sharing each model
    name: str  # which part this is, e.g. "rank1of2": its disk prompt cache is its own

    def check(self, folder: Path) -> None:
        """ValueError (one line) when the model cannot be split."""
        ...

    def load(self, folder: Path) -> tuple[Any, Any]:
        """The model holding only this rank's part, and the tokenizer."""
        ...

    def least(self, n: int) -> int:
        """The smallest n across the ranks: the tightest rank decides for all."""
        ...


@dataclass
class Loaded:
    """A model in memory and everything derived from it once, at load."""

    entry: ModelEntry
    model: Any
    tokenizer: Any
    context: int
    weights_bytes: int
    detokenizers: DetokenizerFactory
    tools: ToolFormat
    prefill: Prefill = field(default_factory=Prefill)
    grammars: Any = None  # constrain.Grammars, made on first use (it reads the whole vocabulary)
    kv_per_token: int = 0  # KV cache bytes per token (kv_bytes_per_token)
    prefill_per_token: int = 0  # activation bytes per prompt token in a prefill chunk
    fingerprint: str | None = None  # of the weights, for the disk prompt cache (when it is on)
    undraftable_said: bool = False  # the log said once why this model drafts nothing
    # What a wide verify pass costs this model here, learned across its answers (drafting.py).
    prices: Prices = field(default_factory=Prices)


class ModelSlot:
    """Holds at most one loaded model, the prompt cache that belongs to it, and its memory guard."""

    def __init__(
        self,
        *,
        prompt_cache_mb: int | None = None,
        memory_limit: int | None = None,
        kv_bits: int | None = None,
        disk: DiskCache | None = None,
        wiring: Wiring | None = None,
        shards: Sharding | None = None,
    ) -> None:
        self.current: Loaded | None = None
        self.last: ModelEntry | None = None  # the model loaded most recently, kept after unload
        self.cache = PromptCache(0)
        self.kv_bits = kv_bits
        self.beside_bytes = 0  # weights held beside the loaded model (a draft model): guarded too
        self.beside_kv_per_token = 0  # ...and its KV cache's bytes per token (it holds the same)
        self.release_beside: Callable[[], None] | None = None  # frees it, at unload
        self._prompt_cache_mb = prompt_cache_mb
        self._memory_limit = memory_limit
        self._disk = disk
        self._wiring = wiring or Wiring()
        self._shards = shards

    @property
    def loaded_id(self) -> str | None:
        """The id of the model in memory, if any."""
        current = self.current
        return current.entry.id if current else None

    @property
    def last_id(self) -> str | None:
        """The id of the model in memory, else of the one loaded last; None if none ever was."""
        current, last = self.current, self.last
        return current.entry.id if current else (last.id if last else None)

    def limit(self) -> int:
        """Bytes the weights and KV cache may use: --memory-limit, else what MLX reports."""
        return self._memory_limit or memory_limit_bytes()

    def switch(self, entry: ModelEntry) -> Loaded:
        """Make `entry` the loaded model, freeing the old one first; on failure reload the old one."""
        current = self.current
        if current is not None and (current.entry.id, current.entry.path) == (entry.id, entry.path):
            current.entry = entry  # a new tier in tiers.toml needs no reload
            return current
        refusal = self._refusal(entry)
        # Across ranks every rank loads or none does: one that cannot would leave the rest
        # waiting for it in the load's last step.
        if self._shards is not None and not self._shards.least(0 if refusal else 1):
            refusal = refusal or ServiceUnavailable(
                f"Model `{entry.id}` cannot be loaded on another rank of this server's group "
                "(its log says why).",
                code="model_load_failed",
            )
        if refusal is not None:
            raise refusal
        previous = current.entry if current else None
        current = None  # drop our reference too, or the old weights survive the unload
        self.unload()
        try:
            return self._load(entry)
        except Exception as exc:
            log.error("loading model %r failed: %s: %s", entry.id, exc.__class__.__name__, exc)
            # The traceback's frames may hold the half-loaded model: free it before the old one
            # comes back, so memory never holds both.
            exc.__traceback__ = None
            self.current = None
            gc.collect()
            mx.clear_cache()
            self._wiring.unwire()
            if previous is not None:
                try:
                    self._load(previous)
                except Exception as again:
                    log.error("reloading %r failed too: %s", previous.id, again)
            raise ServiceUnavailable(
                f"Model `{entry.id}` failed to load ({exc.__class__.__name__})."
                + (f" `{previous.id}` is still loaded." if previous and self.current else ""),
                code="model_load_failed",
            ) from None

    def _refusal(self, entry: ModelEntry) -> ServiceUnavailable | None:
        """Why this model cannot load here, found before anything is unloaded; None if it may."""
        need = weights_bytes(entry.path) // (self._shards.count if self._shards else 1)
        limit = self.limit()
        if limit and need > limit:
            return ServiceUnavailable(
                f"Model `{entry.id}` needs {_gib(need)} for its weights, more than the "
                f"{_gib(limit)} {self._limit_name()}.",
                code="model_too_large",
            )
        try:
            precheck(entry.path)
            if self._shards is not None:
                self._shards.check(entry.path)
        except ValueError as exc:
            return ServiceUnavailable(
                f"Model `{entry.id}` cannot be loaded: {exc}.", code="model_load_failed"
            )
        return None

    def for_request(self, entry: ModelEntry | None) -> Loaded:
        """The named model, else the loaded one, else the last one (idle unload freed it)."""
        if entry is not None:
            return self.switch(entry)
        if self.current is not None:
            return self.current
        if self.last is not None:
            return self.switch(self.last)
        raise NoModelLoaded()

    @staticmethod
    def room(loaded: Loaded, prompt: int) -> int:
        """Tokens left for the answer after a prompt this long; ContextLengthExceeded if none."""
        room = loaded.context - prompt
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {loaded.context} tokens, the answer "
                f"included; your messages take {prompt}"
                + (", which leaves no room for an answer" if room == 0 else "")
                + ". Shorten them.",
                param="messages",
                tokens=prompt,
                context=loaded.context,
            )
        return room

    def answer_tokens(self, loaded: Loaded, prompt: int, asked: int | None, room: int) -> int:
        """The max_tokens a request may have; across ranks, what every rank's memory allows."""
        if self._shards is None:
            return self._answer_tokens(loaded, prompt, asked, room)
        try:
            mine = self._answer_tokens(loaded, prompt, asked, room)
        except InsufficientMemory:
            self._shards.least(0)  # the others wait for this rank's word: give it, then refuse
            raise
        agreed = self._shards.least(mine)
        if agreed < 1:
            raise InsufficientMemory(
                "This request does not fit in the memory of another rank of this server's "
                "group. Shorten the messages or ask for fewer tokens in max_tokens.",
                param="messages",
            )
        return agreed

    def _answer_tokens(self, loaded: Loaded, prompt: int, asked: int | None, room: int) -> int:
        """The max_tokens a request may have: as asked if it fits, a default clamped to what fits.

        The reservation is the weights + the KV cache for prompt and answer + the prompt cache
        held; raises InsufficientMemory when it cannot fit even with the prompt cache emptied
        (on Metal, running out would abort the process instead of raising).
        """
        plan = MemoryPlan(
            loaded.weights_bytes + self.beside_bytes,
            loaded.kv_per_token + self.beside_kv_per_token,
            self.limit(),
            loaded.prefill_per_token,
        )
        if plan.prefill(prompt) > plan.limit:  # reading the prompt alone would run out
            raise InsufficientMemory(
                f"This request needs about {_gib(plan.prefill(prompt))} while its {prompt} "
                f"prompt tokens are read (weights {_gib(plan.weights)} + KV cache "
                f"{_gib(plan.prefill(prompt) - plan.weights - plan.activations(prompt))} + "
                f"prefill activations {_gib(plan.activations(prompt))}), more than the "
                f"{_gib(plan.limit)} {self._limit_name()}. Shorten the messages.",
                param="messages",
            )
        fits = plan.most_tokens() - prompt  # answer tokens that fit with the prompt cache emptied
        if asked is None:
            # Beside the prompt cache as it is, unless that leaves nothing.
            beside = fits - math.ceil(self.cache.nbytes / max(plan.per_token, 1))
            want = min(room, beside if beside >= 1 else fits)
        else:
            want = min(asked, room)
        if 1 <= want <= fits:
            self.cache.shrink(plan.limit - plan.peak(prompt, want))
            return want
        tokens = prompt + max(want, 1)
        hint = (
            f"Ask for at most {fits} tokens in max_tokens."
            if asked is not None and fits >= 1
            else "Shorten the messages."
        )
        raise InsufficientMemory(
            f"This request needs about {_gib(plan.need(tokens))} (weights "
            f"{_gib(plan.weights)} + KV cache for {tokens} tokens {_gib(plan.kv(tokens))}), "
            f"more than the {_gib(plan.limit)} {self._limit_name()}. {hint}",
            param="max_tokens" if asked is not None and fits >= 1 else "messages",
        )

    def unload(self, deadline: float | None = None) -> None:
        """Save the prompt cache to disk, then free the model, its caches and MLX's buffer cache."""
        current = self.current
        if current is None:
            return
        if self._disk is not None and current.fingerprint is not None:
            entries = self.cache.entries()
            self._disk.save(current.entry.id, current.fingerprint, entries, deadline)
            del entries
        model_id = current.entry.id
        del current
        self.current = None
        self.cache = PromptCache(0)
        if self.release_beside is not None:  # a draft model goes with the model it drafts for
            self.release_beside()
        self.release_beside = None
        self.beside_bytes = self.beside_kv_per_token = 0
        gc.collect()
        mx.clear_cache()  # else MLX keeps the freed buffers (mlx-lm issue 1757)
        self._wiring.unwire()
        log.info("unloaded %s; %s", model_id, mlx_memory())

    def _limit_name(self) -> str:
        if self._memory_limit:
            return "memory limit (--memory-limit)"
        return "memory MLX can use on this machine"

    def _load(self, entry: ModelEntry) -> Loaded:
        started = time.perf_counter()
        if self._shards is None:
            model, tokenizer = mlx_load(str(entry.path))[:2]
            size = weights_bytes(entry.path)
        else:
            from tholos_mlx.sharding import PREFILL_CHUNK, params_bytes

            model, tokenizer = self._shards.load(entry.path)
            size = params_bytes(model)
        own_length_check(tokenizer)
        config, dtype = read_config(entry.path), widest_float_bytes(model)
        loaded = Loaded(
            entry=entry,
            model=model,
            tokenizer=tokenizer,
            context=context_length(entry.path),
            weights_bytes=size,
            detokenizers=DetokenizerFactory(tokenizer),
            tools=tool_format(tokenizer),
            kv_per_token=model_kv_bytes_per_token(model, config, dtype, self.kv_bits),
            prefill_per_token=activation_bytes_per_token(config, dtype),
        )
        if self._shards is not None:  # every rank must cut the prompt alike: no learned size
            loaded.prefill = Prefill(PREFILL_CHUNK, PREFILL_CHUNK, PREFILL_CHUNK)
        self.current = loaded
        self.last = entry
        self._wiring.wire()
        if self._prompt_cache_mb is None:
            budget = default_cache_budget(size, self.limit())
        else:
            budget = self._prompt_cache_mb * _MB
        self.cache = PromptCache(budget, self._shards.least if self._shards else None)
        if self._disk is not None and budget > 0:
            self._restore(loaded, budget)
        log.info(
            "loaded %s (%.0f MiB, context %d) in %.1f s; prompt cache %d MiB; KV cache %s; %s",
            entry.id,
            size / _MB,
            loaded.context,
            time.perf_counter() - started,
            budget // _MB,
            f"{self.kv_bits}-bit" if self.kv_bits else "unquantized",
            mlx_memory(),
        )
        return loaded

    def _restore(self, loaded: Loaded, budget: int) -> None:
        """Read the disk prompt cache of these exact weights back into memory."""
        assert self._disk is not None
        try:
            loaded.fingerprint = fingerprint(loaded.entry.path, self.kv_bits)
            if self._shards is not None:  # each rank keeps the cache of its own shard
                loaded.fingerprint += f"-{self._shards.name}"
        except OSError as exc:
            log.warning("%s: no disk prompt cache: %s", loaded.entry.id, exc.strerror)
            return
        for tokens, cache in self._disk.restore(loaded.entry.id, loaded.fingerprint, budget):
            self.cache.put(tokens, cache)
