"""The one model in memory: load, switch with rollback, unload, and what is sized from the model.

Used only on the engine thread. A switch frees the old model before the new one loads, so
memory never holds both; a failed load puts the old one back.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import load as mlx_load

from tholos_mlx import machine
from tholos_mlx.chat_prompt import ToolFormat, tool_format
from tholos_mlx.detokenize import DetokenizerFactory
from tholos_mlx.errors import ServiceUnavailable
from tholos_mlx.generation import Prefill
from tholos_mlx.prompt_cache import PromptCache
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


def default_cache_budget(weights: int, limit: int) -> int:
    """Bytes for the prompt cache when --prompt-cache-mb is not given."""
    return min(max(CACHE_FLOOR, weights), max(limit // CACHE_SHARE_OF_MEMORY, 64 * _MB))


def context_length(folder: Path) -> int:
    """The model's context window from config.json, or DEFAULT_CONTEXT."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_CONTEXT
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
        value = config.get(key) or (config.get("text_config") or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT


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


class ModelSlot:
    """Holds at most one loaded model and the prompt cache that belongs to it."""

    def __init__(self, *, prompt_cache_mb: int | None = None) -> None:
        self.current: Loaded | None = None
        self.cache = PromptCache(0)
        self._prompt_cache_mb = prompt_cache_mb

    @property
    def loaded_id(self) -> str | None:
        """The id of the model in memory, if any."""
        current = self.current
        return current.entry.id if current else None

    def switch(self, entry: ModelEntry) -> Loaded:
        """Make `entry` the loaded model, freeing the old one first; on failure reload the old one."""
        current = self.current
        if current is not None and (current.entry.id, current.entry.path) == (entry.id, entry.path):
            current.entry = entry  # a new tier in tiers.toml needs no reload
            return current
        need = weights_bytes(entry.path)
        limit = memory_limit_bytes()
        if limit and need > limit:
            raise ServiceUnavailable(
                f"Model `{entry.id}` needs {need / 2**30:.1f} GiB for its weights, more than the "
                f"{limit / 2**30:.1f} GiB MLX can use on this machine.",
                code="model_too_large",
            )
        try:
            precheck(entry.path)
        except ValueError as exc:
            raise ServiceUnavailable(
                f"Model `{entry.id}` cannot be loaded: {exc}.", code="model_load_failed"
            ) from None
        previous = current.entry if current else None
        current = None  # drop our reference too, or the old weights survive the unload
        self.unload()
        try:
            return self._load(entry)
        except Exception as exc:
            log.error("loading model %r failed: %s: %s", entry.id, exc.__class__.__name__, exc)
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

    def unload(self) -> None:
        """Free the model, its caches and MLX's buffer cache."""
        if self.current is None:
            return
        log.info("unloading %s", self.current.entry.id)
        self.current = None
        self.cache = PromptCache(0)
        gc.collect()
        mx.clear_cache()  # else MLX keeps the freed buffers (mlx-lm issue 1757)

    def _load(self, entry: ModelEntry) -> Loaded:
        started = time.perf_counter()
        model, tokenizer = mlx_load(str(entry.path))[:2]
        size = weights_bytes(entry.path)
        loaded = Loaded(
            entry=entry,
            model=model,
            tokenizer=tokenizer,
            context=context_length(entry.path),
            weights_bytes=size,
            detokenizers=DetokenizerFactory(tokenizer),
            tools=tool_format(tokenizer),
        )
        self.current = loaded
        if self._prompt_cache_mb is None:
            budget = default_cache_budget(size, memory_limit_bytes())
        else:
            budget = self._prompt_cache_mb * _MB
        self.cache = PromptCache(budget)
        log.info(
            "loaded %s (%.0f MiB, context %d) in %.1f s; prompt cache %d MiB",
            entry.id,
            size / _MB,
            loaded.context,
            time.perf_counter() - started,
            budget // _MB,
        )
        return loaded
