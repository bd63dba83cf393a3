"""count_tokens with a tokenizer alone: the loaded model's weights are never held by a count."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import pytest

from tholos_mlx.chat_prompt import ToolFormat
from tholos_mlx.errors import NoModelLoaded
from tholos_mlx.model_slot import Loaded, ModelSlot
from tholos_mlx.request import GenerationRequest, Message
from tholos_mlx.tiers import ModelEntry
from tholos_mlx.token_count import TokenCounter

WAIT_S = 10.0  # bound for what must happen; never a timing assert
REQUEST = GenerationRequest(messages=(Message("user", "one two three"),))


class HeldTokenizer:
    """A tokenizer whose template waits to be let go: a count caught in the middle."""

    chat_template = None

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply_chat_template(self, turns: list[dict[str, Any]], **_: Any) -> str:
        self.entered.set()
        assert self.release.wait(WAIT_S)
        return " ".join(str(t["content"]) for t in turns)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(range(len(text.split())))


class Weights:
    """Stands for a model's weights: we only need to see when it is freed."""


def loaded_with(tokenizer: Any, weights: Weights) -> Loaded:
    return Loaded(
        entry=ModelEntry("a", "fast", Path("/models/a")),
        model=weights,
        tokenizer=tokenizer,
        context=4096,
        weights_bytes=0,
        detokenizers=cast(Any, None),
        tools=ToolFormat(),
    )


def count_in_thread(counter: TokenCounter, entry: ModelEntry | None = None) -> Future[int]:
    """counter.count() on an event loop of its own thread, as the app runs it."""
    result: Future[int] = Future()

    def main() -> None:
        try:
            result.set_result(asyncio.run(counter.count(REQUEST, entry)))
        except BaseException as exc:
            result.set_exception(exc)

    threading.Thread(target=main, daemon=True).start()
    return result


def test_a_count_running_while_the_model_is_unloaded_holds_none_of_its_weights() -> None:
    tokenizer, weights = HeldTokenizer(), Weights()
    freed = weakref.ref(weights)
    slot = ModelSlot(memory_limit=2**34)
    slot.current = loaded_with(tokenizer, weights)
    del weights
    counted = count_in_thread(TokenCounter(slot))
    assert tokenizer.entered.wait(WAIT_S)
    slot.current = None  # what a switch does before it loads the next model
    gc.collect()
    try:
        assert freed() is None, "the count kept the old model's weights alive"
    finally:
        tokenizer.release.set()
    assert counted.result(WAIT_S) == 3


def test_a_count_for_another_model_than_the_loaded_one_does_not_use_the_loaded_tokenizer(
    tmp_path: Path,
) -> None:
    slot = ModelSlot(memory_limit=2**34)
    slot.current = loaded_with(HeldTokenizer(), Weights())  # would block if it were used
    other = ModelEntry("b", "fast", tmp_path / "b")  # no tokenizer there: a 503
    with pytest.raises(Exception, match="tokenizer cannot be read"):
        count_in_thread(TokenCounter(slot), other).result(WAIT_S)


def test_a_count_with_no_model_ever_loaded_or_named_is_no_model_loaded() -> None:
    with pytest.raises(NoModelLoaded):
        count_in_thread(TokenCounter(ModelSlot(memory_limit=2**34))).result(WAIT_S)
