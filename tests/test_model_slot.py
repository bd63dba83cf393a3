"""Unit tests of the memory guard in tholos_mlx.model_slot: the estimate, the limit, the clamp."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import pytest

from tholos_mlx import machine, model_slot
from tholos_mlx.draft_model import DraftSlot
from tholos_mlx.errors import InsufficientMemory, ServiceUnavailable
from tholos_mlx.generation import PREFILL_CHUNK_MAX, Prefill
from tholos_mlx.model_slot import (
    FALLBACK_LAYERS,
    FALLBACK_WIDTH,
    KV_SLACK_TOKENS,
    Loaded,
    MemoryPlan,
    ModelSlot,
    Wiring,
    activation_bytes_per_token,
    kv_bytes_per_token,
    weights_bytes,
    widest_float_bytes,
)
from tholos_mlx.prompt_cache import PromptCache
from tholos_mlx.tiers import ModelEntry

# SmolLM2-135M, the demo model: 30 layers, 3 KV heads of 64.
DEMO = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64}
GIB = 2**30


def test_kv_bytes_per_token_is_k_and_v_for_each_layer_and_kv_head() -> None:
    assert kv_bytes_per_token(DEMO, 2, None) == 2 * 30 * 3 * 64 * 2
    assert kv_bytes_per_token(DEMO, 4, None) == 2 * 30 * 3 * 64 * 4


def test_quantized_kv_is_bits_over_8_plus_a_scale_and_bias_per_group_of_64() -> None:
    assert kv_bytes_per_token(DEMO, 2, 8) == 2 * 30 * 3 * 64 * (1 + 4 / 64)
    assert kv_bytes_per_token(DEMO, 2, 4) == 2 * 30 * 3 * 64 * (0.5 + 4 / 64)


def test_head_dim_defaults_to_hidden_over_heads_and_kv_heads_to_heads() -> None:
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}
    assert kv_bytes_per_token(config, 2, None) == 2 * 2 * 4 * 64 * 2


def test_a_multimodal_config_is_read_from_its_text_config() -> None:
    config = {"model_type": "vlm", "vision_config": {"hidden_size": 9999}, "text_config": DEMO}
    assert kv_bytes_per_token(config, 2, None) == kv_bytes_per_token(DEMO, 2, None)


def test_a_config_without_layer_or_head_counts_assumes_a_large_model() -> None:
    assert kv_bytes_per_token({}, 2, None) == 2 * FALLBACK_LAYERS * FALLBACK_WIDTH * 2
    no_heads = {"num_hidden_layers": 4, "hidden_size": 128}
    assert kv_bytes_per_token(no_heads, 2, None) == 2 * 4 * 128 * 2


class Params:
    """What widest_float_bytes reads of a model: parameters(), a tree of arrays."""

    def __init__(self, tree: dict[str, Any]) -> None:
        self.tree = tree

    def parameters(self) -> dict[str, Any]:
        return self.tree


def test_the_kv_element_size_is_the_widest_float_among_the_weights() -> None:
    half = {"proj": {"weight": mx.zeros((4, 4), dtype=mx.float16)}}
    assert widest_float_bytes(Params(half)) == 2
    norms = {**half, "layers": [{"norm": {"weight": mx.zeros((4,), dtype=mx.float32)}}]}
    assert widest_float_bytes(Params(norms)) == 4  # as in the demo model
    quantized = {
        "weight": mx.zeros((4, 1), dtype=mx.uint32),
        "scales": mx.zeros((4, 1), dtype=mx.bfloat16),
    }
    assert widest_float_bytes(Params(quantized)) == 2  # the scales; packed weights are integers


# -- the guard: ModelSlot.answer_tokens --

WEIGHTS = 1000 * 1000
PER_TOKEN = 1000
CONTEXT = 4096


def loaded() -> Loaded:
    entry = ModelEntry("m", "fast", Path("/nonexistent"))
    return Loaded(entry, None, None, CONTEXT, WEIGHTS, Any, Any, kv_per_token=PER_TOKEN)  # type: ignore[arg-type]


def slot_fitting(tokens: int) -> ModelSlot:
    """A slot whose limit holds the weights and a KV cache of exactly `tokens` tokens."""
    return ModelSlot(memory_limit=WEIGHTS + PER_TOKEN * (tokens + KV_SLACK_TOKENS))


def test_an_asked_max_tokens_that_fits_is_kept() -> None:
    assert slot_fitting(1000).answer_tokens(loaded(), 100, 900, CONTEXT - 100) == 900


def test_an_asked_max_tokens_that_cannot_fit_is_insufficient_memory_naming_the_numbers() -> None:
    with pytest.raises(InsufficientMemory) as caught:
        slot_fitting(1000).answer_tokens(loaded(), 100, 901, CONTEXT - 100)
    err = caught.value
    assert (err.status, err.type, err.code, err.param) == (
        400,
        "invalid_request_error",
        "insufficient_memory",
        "max_tokens",
    )
    need = WEIGHTS + PER_TOKEN * (1001 + KV_SLACK_TOKENS)
    limit = WEIGHTS + PER_TOKEN * (1000 + KV_SLACK_TOKENS)
    assert f"{need / GIB:.2f} GiB" in err.message and f"{limit / GIB:.2f} GiB" in err.message
    assert "1001 tokens" in err.message and "at most 900" in err.message
    assert "--memory-limit" in err.message


def test_an_asked_max_tokens_beyond_the_context_is_cut_to_the_context_first() -> None:
    assert slot_fitting(CONTEXT).answer_tokens(loaded(), 96, 100_000, CONTEXT - 96) == 4000


def test_a_default_max_tokens_is_clamped_to_what_fits() -> None:
    assert slot_fitting(1000).answer_tokens(loaded(), 100, None, CONTEXT - 100) == 900
    assert slot_fitting(10_000).answer_tokens(loaded(), 100, None, CONTEXT - 100) == CONTEXT - 100


def test_a_prompt_that_alone_cannot_fit_is_refused_even_with_a_default() -> None:
    with pytest.raises(InsufficientMemory) as caught:
        slot_fitting(100).answer_tokens(loaded(), 100, None, CONTEXT - 100)
    assert caught.value.param == "messages"
    assert "Shorten the messages" in caught.value.message


class Layer:
    """A prompt cache layer as PromptCache sees it."""

    def __init__(self, nbytes: int) -> None:
        self.offset, self.nbytes = 1, nbytes


def test_a_default_leaves_the_prompt_cache_alone_and_an_asked_one_evicts_what_it_needs() -> None:
    slot = slot_fitting(1000)
    slot.cache = PromptCache(10**9)
    for start in (1, 10, 20):
        slot.cache.put([start, start + 1], [Layer(100 * PER_TOKEN)])
    assert slot.answer_tokens(loaded(), 100, None, CONTEXT - 100) == 600  # beside 300 tokens' worth
    assert len(slot.cache) == 3
    assert slot.answer_tokens(loaded(), 100, 750, CONTEXT - 100) == 750
    assert len(slot.cache) == 1  # the two least recently used went to make room


def test_a_model_above_the_limit_is_refused_unless_memory_limit_allows_it(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "config.json").write_text("{}")
    entry = ModelEntry("big", "fast", folder)
    with pytest.raises(ServiceUnavailable) as caught:
        ModelSlot(memory_limit=4000).switch(entry)
    assert caught.value.code == "model_too_large"
    assert "--memory-limit" in caught.value.message
    with pytest.raises(ServiceUnavailable) as caught:
        ModelSlot(memory_limit=GIB).switch(entry)
    assert caught.value.code == "model_load_failed"  # past the size check: no tokenizer here


def test_the_limit_falls_back_to_metal_device_info_then_to_ram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metal = SimpleNamespace(
        is_available=lambda: True,
        device_info=lambda: {"max_recommended_working_set_size": 12 * GIB, "memory_size": 16 * GIB},
    )
    old_mlx = SimpleNamespace(metal=metal)  # no mx.device_info
    monkeypatch.setattr(model_slot, "mx", old_mlx)
    assert model_slot.memory_limit_bytes() == 12 * GIB
    assert ModelSlot().limit() == 12 * GIB
    assert ModelSlot(memory_limit=40 * GIB).limit() == 40 * GIB
    cpu = SimpleNamespace(device_info=lambda: {"device_name": "cpu"}, metal=None)
    monkeypatch.setattr(model_slot, "mx", cpu)
    monkeypatch.setattr(machine, "total_memory_bytes", lambda: 7 * GIB)
    assert model_slot.memory_limit_bytes() == 7 * GIB


def test_kv_bytes_are_measured_from_the_cache_the_model_really_makes() -> None:
    from mlx_lm.models import llama

    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=3,
        intermediate_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=32,
    )
    model = llama.Model(args)
    model.set_dtype(mx.float16)
    expected = 2 * 3 * 2 * (64 // 4) * 2  # K and V, layers, KV heads, head dim, float16
    assert model_slot.measured_kv_bytes_per_token(model, None) == expected
    quantized = model_slot.measured_kv_bytes_per_token(model, 8)
    assert quantized == model_slot.kv_bytes_per_token(
        {
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_size": 64,
        },
        2,
        8,
    )


def test_a_model_whose_cache_is_not_plain_kv_falls_back_to_the_config() -> None:
    from mlx_lm.models.cache import RotatingKVCache

    class Windowed:
        def make_cache(self) -> list[Any]:
            return [RotatingKVCache(max_size=4)]

        def __call__(self, tokens: mx.array, cache: list[Any]) -> mx.array:
            k = mx.zeros((1, 1, tokens.shape[1], 8))
            cache[0].update_and_fetch(k, k)
            return mx.zeros((1, tokens.shape[1], 8))

    assert model_slot.measured_kv_bytes_per_token(Windowed(), None) is None


class WiredLimit:
    """mx.set_wired_limit's stand-in: keeps the limit, returns the one before, records calls."""

    def __init__(self) -> None:
        self.limit = 5
        self.calls: list[int] = []

    def set(self, n: int) -> int:
        old, self.limit = self.limit, n
        self.calls.append(n)
        return old


def test_a_loaded_model_is_wired_as_mlx_lm_wires_it_and_unwired_at_unload(
    tiny_folder: Path,
) -> None:
    wired = WiredLimit()
    slot = ModelSlot(prompt_cache_mb=0, wiring=Wiring(lambda: 12 * GIB, wired.set))
    slot.switch(ModelEntry("a", "fast", tiny_folder))
    assert wired.calls == [12 * GIB]
    slot.switch(ModelEntry("b", "other", tiny_folder))  # a unloaded, then b loaded
    assert wired.calls == [12 * GIB, 5, 12 * GIB]
    slot.unload()
    slot.unload()  # nothing loaded: nothing more to undo
    assert wired.calls == [12 * GIB, 5, 12 * GIB, 5] and wired.limit == 5


def test_only_metal_has_a_working_set_to_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    info = {"max_recommended_working_set_size": 12 * GIB, "memory_size": 16 * GIB}
    metal = SimpleNamespace(is_available=lambda: True, device_info=lambda: info)
    monkeypatch.setattr(model_slot, "mx", SimpleNamespace(metal=metal, device_info=lambda: info))
    assert model_slot.metal_working_set() == 12 * GIB
    cpu = SimpleNamespace(is_available=lambda: False)
    monkeypatch.setattr(model_slot, "mx", SimpleNamespace(metal=cpu, device_info=lambda: info))
    assert model_slot.metal_working_set() is None
    wired = WiredLimit()
    wiring = Wiring(set_limit=wired.set)
    wiring.wire()
    wiring.unwire()
    assert wired.calls == []  # off Metal, mx.set_wired_limit is never called


# -- the guard counts the prefill's activations (issue 18 bug 6) --


def test_a_prefill_chunk_takes_at_most_mlx_lms_2048_tokens() -> None:
    plan = Prefill(size=1024)
    plan.learn(1024, 1e-6)  # very fast: it would grow without bound
    assert plan.size == PREFILL_CHUNK_MAX == 2048


def test_activations_are_two_hidden_widths_and_three_mlp_widths_per_token() -> None:
    config = {"hidden_size": 576, "intermediate_size": 1536}
    assert activation_bytes_per_token(config, 2) == (2 * 576 + 3 * 1536) * 2
    assert activation_bytes_per_token({"text_config": config}, 4) == (2 * 576 + 3 * 1536) * 4
    assert activation_bytes_per_token({"hidden_size": 100}, 2) == (2 * 100 + 3 * 400) * 2


def prefilling(per_token: int) -> Loaded:
    """loaded() whose prefill chunks need `per_token` activation bytes per prompt token."""
    model = loaded()
    model.prefill_per_token = per_token
    return model


def test_a_long_prompt_whose_prefill_cannot_fit_is_refused_though_its_kv_cache_would() -> None:
    # The KV cache for 3000 tokens and the answer fits; a 2048-token chunk's activations do not.
    slot = slot_fitting(3000)
    with pytest.raises(InsufficientMemory) as caught:
        slot.answer_tokens(prefilling(4 * PER_TOKEN), 2900, 10, CONTEXT - 2900)
    err = caught.value
    assert (err.code, err.param) == ("insufficient_memory", "messages")
    assert "prefill activations" in err.message and "Shorten the messages" in err.message
    assert slot.answer_tokens(prefilling(0), 2900, 10, CONTEXT - 2900) == 10  # as before


def test_the_prefill_counts_one_chunk_however_long_the_prompt() -> None:
    plan = MemoryPlan(WEIGHTS, PER_TOKEN, 10**12, prefill_per_token=7)
    assert plan.activations(100) == 700
    assert plan.activations(PREFILL_CHUNK_MAX * 3) == 7 * PREFILL_CHUNK_MAX
    # The KV cache while reading is what MLX allocates: whole steps of 256 tokens.
    assert plan.prefill(300) == WEIGHTS + PER_TOKEN * 512 + 7 * 300


def test_a_short_prompt_with_a_few_answer_tokens_left_is_still_answered() -> None:
    # A small prompt's activations fit in the room its KV cache's last 256-token step leaves.
    assert slot_fitting(104).answer_tokens(prefilling(PER_TOKEN), 100, 4, CONTEXT - 100) == 4


def test_the_prompt_cache_is_shrunk_to_leave_room_for_the_prefill_too() -> None:
    slot = slot_fitting(3000)
    slot.cache = PromptCache(10**9)
    for start in (1, 10, 20):
        slot.cache.put([start, start + 1], [Layer(100 * PER_TOKEN)])
    # The answer's KV cache alone leaves room for all three entries; the prefill, for one.
    prefill = prefilling(554)  # 2048 tokens of KV + 2000 x 554 bytes: 100 tokens' worth left
    assert slot.answer_tokens(prefill, 2000, 10, CONTEXT - 2000) == 10
    assert len(slot.cache) == 1


class OtherRanks:
    """model_slot.Sharding as one rank sees it, with every other rank answering `theirs`."""

    count = 2
    name = "rank0of2"

    def __init__(self, theirs: int) -> None:
        self.theirs = theirs
        self.asked: list[int] = []

    def check(self, folder: Path) -> None:
        """Every model splits."""

    def load(self, folder: Path) -> tuple[Any, Any]:
        raise AssertionError("no rank loads when one cannot")

    def least(self, n: int) -> int:
        self.asked.append(n)
        return min(n, self.theirs)


def _loadable(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_across_ranks_no_rank_loads_a_model_another_rank_cannot(tmp_path: Path) -> None:
    ranks = OtherRanks(0)
    slot = ModelSlot(memory_limit=2**30, shards=ranks)
    with pytest.raises(ServiceUnavailable, match="another rank"):
        slot.switch(ModelEntry("m", "fast", _loadable(tmp_path / "m")))
    assert ranks.asked == [1] and slot.current is None


def test_across_ranks_a_rank_that_cannot_load_still_tells_the_others(tmp_path: Path) -> None:
    ranks = OtherRanks(1)
    slot = ModelSlot(memory_limit=2**30, shards=ranks)
    with pytest.raises(ServiceUnavailable, match="cannot be loaded"):
        slot.switch(ModelEntry("m", "fast", tmp_path / "missing"))
    assert ranks.asked == [0]


def test_across_ranks_the_answer_budget_is_the_tightest_ranks(tmp_path: Path) -> None:
    ranks = OtherRanks(5)
    slot = ModelSlot(memory_limit=2**30, shards=ranks)
    loaded: Any = SimpleNamespace(weights_bytes=1000, kv_per_token=10, prefill_per_token=0)
    assert slot.answer_tokens(loaded, 10, 100, 1000) == 5
    ranks.theirs = 0
    with pytest.raises(InsufficientMemory, match="another rank"):
        slot.answer_tokens(loaded, 10, 100, 1000)


def test_a_draft_models_kv_cache_is_counted_beside_the_models_own() -> None:
    slot = slot_fitting(1000)
    slot.beside_kv_per_token = PER_TOKEN  # the draft caches as much per token as the model
    half = (1000 + KV_SLACK_TOKENS) // 2 - KV_SLACK_TOKENS  # tokens both caches can hold
    assert slot.answer_tokens(loaded(), 100, None, CONTEXT - 100) == half - 100
    with pytest.raises(InsufficientMemory):
        slot.answer_tokens(loaded(), 100, half - 99, CONTEXT - 100)


def test_the_draft_model_is_counted_while_held_and_let_go_with_the_model_it_drafts_for(
    tiny_folder: Path,
) -> None:
    slot = ModelSlot(prompt_cache_mb=0)
    model = slot.switch(ModelEntry("a", "fast", tiny_folder))
    draft = DraftSlot(ModelEntry("d", "small", tiny_folder))
    assert draft.for_answer(slot, model.tokenizer) is not None
    assert slot.beside_bytes == weights_bytes(tiny_folder)
    assert slot.beside_kv_per_token == model.kv_per_token  # the same tiny model drafts
    slot.unload()  # what idle unload does
    assert (slot.beside_bytes, slot.beside_kv_per_token, slot.release_beside) == (0, 0, None)
    assert draft._model is None
    model = slot.switch(ModelEntry("a", "fast", tiny_folder))
    assert draft.for_answer(slot, model.tokenizer) is not None  # back with the next answer
    assert slot.beside_bytes == weights_bytes(tiny_folder)
