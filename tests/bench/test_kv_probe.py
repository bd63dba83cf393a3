"""Issue 14 item 4 on the CPU: decoding writes the KV cache in place on every path a cache takes.

A buffer that moved between two tokens without growing is a copy of the whole cache, every
token: a cost that grows with the context. The probe must see one when a reference holds it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kv_probe.py"


def _load_script() -> Any:
    """scripts/kv_probe.py is an experiment, not part of the wheel: load it from its file."""
    spec = importlib.util.spec_from_file_location("kv_probe", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kv_probe"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


kv_probe = _load_script()

TOKENS = 12  # within one 256-token step of the cache: no growth expected


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> Any:
    from mlx_lm import load

    return load(str(tiny_model))[0]


@pytest.mark.parametrize("path", sorted(kv_probe.PATHS))
def test_decoding_never_copies_the_kv_cache_on_any_cache_path(model: Any, path: str) -> None:
    run = kv_probe.PATHS[path](model, kv_probe.prompt_of(300), TOKENS)
    assert len(run.addresses) == TOKENS
    # One capacity for all the tokens: the cache did not grow while they were measured. A cut
    # prefix grows once, to its length plus mlx-lm's step, before the first of them.
    assert len(set(run.capacities)) == 1, "the cache should not have grown during these tokens"
    assert run.capacities[0] in (512, 299 + 256)
    assert run.copies == 0


def test_the_probe_sees_a_copy_when_a_reference_holds_the_buffer(model: Any) -> None:
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    run = kv_probe.decode(model, kv_probe.prompt_of(300), cache, TOKENS, hold=True)
    assert run.copies == TOKENS - 1
