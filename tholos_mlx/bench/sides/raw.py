"""Raw mlx-lm: `stream_generate` on the model folder, in this process, timed per token."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import load as mlx_load
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler
from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer


@dataclass(frozen=True)
class RawRun:
    """One raw generation: what mlx-lm delivers with nothing in front of it."""

    ttft_s: float  # stream_generate called -> first token out (prefill + first step)
    prefill_tps: float  # prompt tokens / TTFT
    decode_tps: float | None  # tokens after the first / their time
    peak_memory_bytes: int  # mx.get_peak_memory(), reset before the run
    tokens: int


def device() -> str:
    """ "gpu" or "cpu": where MLX runs by default here."""
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def load_tokenizer(folder: Path) -> Any:
    """The model's tokenizer alone (no weights), as mlx-lm wraps it."""
    return mlx_load_tokenizer(folder)  # type: ignore[no-untyped-call]


class RawModel:
    """A model loaded by mlx-lm in this process, generating greedily with EOS masked."""

    def __init__(self, folder: Path) -> None:
        loaded: Any = mlx_load(str(folder))
        self.model, self.tokenizer = loaded[0], loaded[1]
        self._eos = sorted(self.tokenizer.eos_token_ids)
        self._mask: mx.array | None = None

    def _no_eos(self, tokens: mx.array, logits: mx.array) -> mx.array:
        # Every run must make exactly the tokens asked for; one add a step, beside a forward pass.
        if self._mask is None or self._mask.shape[-1] != logits.shape[-1]:
            mask = [0.0] * logits.shape[-1]
            for i in self._eos:
                if i < len(mask):
                    mask[i] = float("-inf")
            self._mask = mx.array(mask, dtype=logits.dtype)
        return logits + self._mask

    def run(self, ids: list[int], gen_tokens: int) -> RawRun:
        """Generate `gen_tokens` tokens after the prompt `ids`, greedily as the engine would."""
        prompt = mx.array(ids)
        sampler = make_sampler(temp=0.0)
        stamps: list[float] = []
        mx.reset_peak_memory()
        start = time.perf_counter()
        for _ in stream_generate(
            self.model,
            self.tokenizer,
            prompt,
            max_tokens=gen_tokens,
            sampler=sampler,
            logits_processors=[self._no_eos],
        ):
            stamps.append(time.perf_counter())
        peak = int(mx.get_peak_memory())
        ttft = stamps[0] - start
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
        return RawRun(ttft, len(ids) / ttft, decode, peak, len(stamps))

    def close(self) -> None:
        """Free the model's memory before the server loads its own copy."""
        del self.model
        self._mask = None
        gc.collect()
        mx.clear_cache()  # else MLX keeps the freed buffers (mlx-lm issue 1757)
