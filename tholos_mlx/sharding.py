"""Each rank loads only its part of a model: tensor parallel, pipeline, or pipeline stages.

mlx-lm shards a model itself: `model.shard(group)` (tensor parallel: an all-reduce per layer)
where its class has it and the attention heads divide by the ranks, else
`model.model.pipeline(group)` (one hop per token) where it has that. A llama-family model
whose heads do not divide (the 135M demo model: 9 heads, 3 KV heads) is cut into stages of
whole layers here, the way mlx-lm's pipeline models cut theirs. Weights load lazily, so a rank
reads only the arrays its part keeps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten
from mlx_lm import load as mlx_load
from mlx_lm import utils as mlx_utils

from tholos_mlx.ranks import Ranks

log = logging.getLogger("tholos.ranks")

Module: Any = getattr(nn, "Module")  # noqa: B009 (mlx.nn has no type stubs for it)
Mode = Literal["tensor", "pipeline", "stages"]
PREFILL_CHUNK = 512  # every rank must cut the prompt alike: a fixed size, not a learned one


def _config(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("config.json is not an object")
    text = data.get("text_config")
    return {**data, **text} if isinstance(text, dict) else data


def mode_for(folder: Path, ranks: int) -> Mode:
    """How a model folder splits across `ranks` ranks; ValueError (one line) if it cannot."""
    config = _config(folder)
    # mlx-lm's own model-type lookup (remappings included); private in mlx-lm 0.32.
    model_class, _ = mlx_utils._get_classes(config)
    model_type = config.get("model_type", "?")
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads", heads)
    layers = config.get("num_hidden_layers")
    divides = (
        isinstance(heads, int)
        and isinstance(kv_heads, int)
        and heads % ranks == 0
        and kv_heads % ranks == 0
    )
    if hasattr(model_class, "shard") and divides:
        return "tensor"
    enough = not isinstance(layers, int) or layers >= ranks
    inner = _inner_class(model_class)
    if inner is not None and hasattr(inner, "pipeline") and enough:
        return "pipeline"
    plain = all(t == "full_attention" for t in config.get("layer_types") or ["full_attention"])
    if model_class.__module__ == "mlx_lm.models.llama" and plain and enough:
        return "stages"
    raise ValueError(
        f"mlx-lm's `{model_type}` model can be split across {ranks} ranks neither tensor-"
        "parallel (no `shard`, or heads that do not divide) nor as a pipeline (no `pipeline`)"
    )


def _inner_class(model_class: type) -> type | None:
    """The class of `model.model` (where mlx-lm puts `pipeline`), from the module's classes."""
    import importlib

    module = importlib.import_module(model_class.__module__)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Module) and value is not model_class:
            if "pipeline" in vars(value) or any("pipeline" in vars(b) for b in value.__mro__[1:]):
                return value
    return None


class Shards:
    """This rank's share of every model it loads (model_slot.Sharding)."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self.count = ranks.size
        self.name = f"rank{ranks.rank}of{ranks.size}"

    def check(self, folder: Path) -> None:
        """Refuse, before anything is unloaded, a model that cannot be split."""
        mode_for(folder, self.count)

    def load(self, folder: Path) -> tuple[Any, Any]:
        """The model with only this rank's part of the weights in memory, and its tokenizer."""
        mode = mode_for(folder, self.count)
        log.info("rank %d of %d: loading its part of %s (%s)", self.ranks.rank, self.count,
                 folder.name, "tensor parallel" if mode == "tensor" else mode)  # fmt: skip
        with self.ranks.watchdog.paused():
            try:
                model, tokenizer = mlx_load(str(folder), lazy=True)[:2]
                group = self.ranks.group
                if mode == "tensor":
                    model.shard(group)
                elif mode == "pipeline":
                    model.model.pipeline(group)
                else:
                    _stages(model, group)
                mx.eval(model.parameters())
            except Exception:
                self.ranks.least(0)  # the others wait here for this rank's word
                raise
            # Every rank holds its part before any answers: the slowest loader sets the pace.
            if not self.ranks.least(1):
                raise RuntimeError("another rank could not load its part")
        return model, tokenizer

    def least(self, n: int) -> int:
        """The smallest n across the ranks."""
        return self.ranks.least(n)


def params_bytes(model: Any) -> int:
    """Bytes of the arrays this rank holds: its shard, not the folder."""
    params: Any = tree_flatten(model.parameters())
    return sum(int(v.nbytes) for _, v in params if isinstance(v, mx.array))


class _Receive(Module):  # type: ignore[misc]
    """The first layer of a stage: its input comes from the stage before (the next rank)."""

    def __init__(self, layer: Any, group: Any, dtype: Any) -> None:
        super().__init__()
        self.layer = layer
        self.use_sliding = False
        self._group = group
        self._dtype = dtype

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        rank = self._group.rank()
        x = mx.distributed.recv_like(x.astype(self._dtype), rank + 1, group=self._group)
        return self.layer(x, *args, **kwargs)  # type: ignore[no-any-return]


class _Send(Module):  # type: ignore[misc]
    """The last layer of a stage: its output goes on, and every rank gets the last stage's."""

    def __init__(self, layer: Any, group: Any, dtype: Any) -> None:
        super().__init__()
        self.layer = layer
        self.use_sliding = False
        self._group = group
        self._dtype = dtype

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        group = self._group
        h = self.layer(x, *args, **kwargs).astype(self._dtype)
        if group.rank() != 0:
            h = mx.distributed.send(h, group.rank() - 1, group=group)
            cache = kwargs.get("cache")
            if cache is not None and isinstance(getattr(cache, "keys", None), mx.array):
                # A prefill evaluates only the cache: it must wait for the hand-over too.
                cache.keys = mx.depends(cache.keys, h)
        return mx.distributed.all_gather(h, group=group)[: h.shape[0]]


def _stages(model: Any, group: Any) -> None:
    """mlx-lm's pipeline split for a model without one: rank 0 runs the last layers."""
    inner = model.model
    layers = list(inner.layers)
    size, rank = group.size(), group.rank()
    base, extra = divmod(len(layers), size)
    split = [base + (1 if r < extra else 0) for r in range(size)]
    start = sum(split[rank + 1 :])
    mine: list[Any] = layers[start : start + split[rank]]
    # What a layer hands on has the widest float type of its weights (float32 norms beside
    # float16 scales): sender and receiver must agree on it, or the bytes are misread.
    params: Any = tree_flatten(layers[0].parameters())
    dtype = max(
        (v.dtype for _, v in params if mx.issubdtype(v.dtype, mx.floating)),
        key=lambda d: d.size,
        default=mx.float32,
    )
    if rank < size - 1:
        mine[0] = _Receive(mine[0], group, dtype)
    mine[-1] = _Send(mine[-1], group, dtype)
    inner.layers = mine
    inner.fa_idx, inner.swa_idx = 0, None
