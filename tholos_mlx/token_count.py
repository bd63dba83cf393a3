"""A request's prompt length in tokens, counted with a tokenizer alone: never a turn, never weights.

The count runs in a worker thread while the engine thread may be switching models; it holds
only tokenizers, so a switch at that moment frees the old weights as it must (on Metal two
models in memory abort the process).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mlx_lm.tokenizer_utils import load as load_tokenizer

from tholos_mlx.chat_prompt import ToolFormat, own_length_check, prompt_ids, tool_format
from tholos_mlx.errors import NoModelLoaded, ServiceUnavailable
from tholos_mlx.model_slot import ModelSlot
from tholos_mlx.request import GenerationRequest
from tholos_mlx.tiers import ModelEntry


class TokenCounter:
    """Counts as the loaded model would render the prompt; a model not loaded by its tokenizer."""

    def __init__(self, slot: ModelSlot) -> None:
        self._slot = slot
        self._tokenizers: dict[Path, Any] = {}  # models not loaded, by folder; read once each

    async def count(self, request: GenerationRequest, entry: ModelEntry | None) -> int:
        """The prompt's length as the engine would render it for this request."""
        found = self._loaded_tokenizer(entry)
        if found is not None:
            return await asyncio.to_thread(_count, request, *found)
        if entry is None:
            entry = self._slot.last  # idle unload freed it: count with its tokenizer
            if entry is None:
                raise NoModelLoaded()
        return await asyncio.to_thread(self._count_unloaded, request, entry)

    def _loaded_tokenizer(self, entry: ModelEntry | None) -> tuple[Any, ToolFormat] | None:
        """The loaded model's tokenizer and tool format when it is the one asked for."""
        loaded = self._slot.current
        if loaded is None:
            return None
        if entry is not None and (loaded.entry.id, loaded.entry.path) != (entry.id, entry.path):
            return None
        return loaded.tokenizer, loaded.tools  # these two only: never `loaded`, which holds weights

    def _count_unloaded(self, request: GenerationRequest, entry: ModelEntry) -> int:
        tokenizer = self._tokenizers.get(entry.path)
        if tokenizer is None:
            try:
                tokenizer = own_length_check(load_tokenizer(entry.path))
            except Exception as exc:
                raise ServiceUnavailable(
                    f"Model `{entry.id}`'s tokenizer cannot be read ({exc.__class__.__name__}).",
                    code="model_load_failed",
                ) from None
            self._tokenizers[entry.path] = tokenizer
        return _count(request, tokenizer, tool_format(tokenizer))


def _count(request: GenerationRequest, tokenizer: Any, fmt: ToolFormat) -> int:
    tools = request.tools if request.tool_choice.mode != "none" else ()
    return len(prompt_ids(tokenizer, request.messages, tools, fmt, request.continue_final))
