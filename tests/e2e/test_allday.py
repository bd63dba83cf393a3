"""End to end, all day on a Mac: idle unload and reload, the memory guard, --kv-bits, the disk prompt cache.

Each server gets a home of its own whose tiers.toml points at the demo model's folder (the
shared demo home stays read-only), so the disk cache each writes is its own.
"""

from __future__ import annotations

import json
import stat
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import server as srv
from tests.conftest import DEMO_ID, DEMO_TIER, run_cli

pytestmark = pytest.mark.e2e

WAIT_S = 120.0  # bound for what must happen; never a timing assert
IDLE = "3s"
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who loves tea."}]
SYSTEM = {
    "role": "system",
    "content": "You are a terse geography tutor. Answer every question with a single word, "
    "the name asked for, and nothing else. Never explain.",
}
CACHED_PROMPT = [SYSTEM, {"role": "user", "content": "What is the capital of Italy?"}]


def home_for(root: Path, demo_home: Path) -> Path:
    """A fresh home whose tiers.toml names the demo model's folder by its absolute path."""
    root.mkdir(parents=True)
    folder = demo_home / "models" / DEMO_ID
    (root / "tiers.toml").write_text(
        f'[models.{DEMO_ID}]\npath = "{folder}"\ntier = "{DEMO_TIER}"\n', encoding="utf-8"
    )
    return root


def health(server: srv.Server) -> dict[str, Any]:
    with server.client() as c:
        r = c.get("/health")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def cache_files(home: Path) -> list[Path]:
    folder = home / "cache" / DEMO_ID
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


# -- idle unload and reload --


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Iterator[srv.Server]:
    """A server that unloads its model after 3 s without a request."""
    home = home_for(tmp_path_factory.mktemp("idle") / "home", demo_home)
    flags = ("--idle-unload", IDLE, "--disk-cache-gb", "4")
    with srv.running(home, "--model", "fast", *flags) as s:
        yield s


def test_an_idle_server_unloads_and_the_next_request_loads_the_last_model(
    idle: srv.Server,
) -> None:
    ok(idle.chat(CAPITAL, max_tokens=2))
    wait_for(lambda: health(idle)["model"] is None, "the idle unload")
    assert health(idle) == {
        "status": "ok",
        "model": None,
        "last_model": DEMO_ID,
        "queue": 0,
        "speculative": "ngram",
    }
    assert cache_files(idle.home), "the prompt cache went to disk on idle unload"
    with idle.client() as c:
        count = c.post("/v1/messages/count_tokens", json={"messages": CAPITAL})
    assert count.status_code == 200 and count.json()["input_tokens"] > 0, count.text
    assert health(idle)["model"] is None  # counted with the last model's tokenizer only
    body = ok(idle.chat(CAPITAL, max_tokens=2))  # names no model
    assert body["model"] == DEMO_ID
    assert health(idle)["model"] == DEMO_ID


def test_requests_arriving_around_the_unload_wait_their_turn_and_never_fail(
    idle: srv.Server,
) -> None:
    unloads_before = idle.log_text().count("idle for")
    for offset in (-0.05, 0.0, 0.05, 0.15):  # around the moment the unload starts
        ok(idle.chat(CAPITAL, max_tokens=1))
        time.sleep(3.0 + offset)
        assert ok(idle.chat(CAPITAL, max_tokens=1))["model"] == DEMO_ID
    # The later offsets come after the server's timer by construction: they met an unload.
    assert idle.log_text().count("idle for") > unloads_before


def test_a_line_of_waiting_requests_never_triggers_the_unload(idle: srv.Server) -> None:
    ok(idle.chat(CAPITAL, max_tokens=1))  # loaded, and the clock restarted
    unloads_before = idle.log_text().count("idle for")
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: idle.chat(STORY, max_tokens=12), range(4)))
    took = time.monotonic() - started
    for r in answers:
        assert ok(r)["model"] == DEMO_ID
    assert idle.log_text().count("idle for") == unloads_before, f"unloaded during {took:.1f} s"


# -- the memory guard --


def kv_bytes_per_token(folder: Path) -> int:
    """2 x layers x KV heads x head dim x the widest float the weights hold (read from headers)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    widest = 2
    for weights in folder.glob("*.safetensors"):
        with weights.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for tensor in header.values():
            if isinstance(tensor, dict) and tensor.get("dtype") in ("F32", "F64"):
                widest = max(widest, 4 if tensor["dtype"] == "F32" else 8)
    layers, kv_heads = config["num_hidden_layers"], config["num_key_value_heads"]
    return 2 * layers * kv_heads * config["head_dim"] * widest


@pytest.fixture(scope="module")
def story_prompt_tokens(idle: srv.Server) -> int:
    """The prompt tokens of STORY, as the demo model's template renders it."""
    return int(ok(idle.chat(STORY, max_tokens=1))["usage"]["prompt_tokens"])


CLAMP = 4  # the answer tokens the memory limit leaves room for beside STORY


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, demo_home: Path, story_prompt_tokens: int
) -> Iterator[srv.Server]:
    """A server whose --memory-limit holds the weights and a KV cache for STORY + CLAMP tokens."""
    folder = demo_home / "models" / DEMO_ID
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    per_token = kv_bytes_per_token(folder)
    slack = 256  # MLX grows a KV cache 256 tokens at a time: the guard reserves one step more
    limit = weights + per_token * (story_prompt_tokens + CLAMP + slack) + per_token // 2
    home = home_for(tmp_path_factory.mktemp("guard") / "home", demo_home)
    flags = ("--memory-limit", repr(limit / 2**30), "--prompt-cache-mb", "0")
    with srv.running(home, "--model", "fast", *flags) as s:
        yield s


def test_a_max_tokens_that_cannot_fit_is_refused_with_the_numbers(guarded: srv.Server) -> None:
    r = guarded.chat(STORY, max_tokens=5000)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "insufficient_memory",
        "max_tokens",
    )
    assert err["message"].count("GiB") >= 3 and f"at most {CLAMP} tokens" in err["message"]
    assert health(guarded)["model"] == DEMO_ID  # refused before it ran, nothing crashed


def test_a_max_tokens_that_fits_is_answered(guarded: srv.Server) -> None:
    body = ok(guarded.chat(STORY, max_tokens=2))
    assert body["usage"]["completion_tokens"] <= 2


def test_a_default_max_tokens_is_clamped_to_what_fits(guarded: srv.Server) -> None:
    body = ok(guarded.chat(STORY))
    assert body["usage"]["completion_tokens"] == CLAMP
    assert body["choices"][0]["finish_reason"] == "length"


# -- --kv-bits 8, with the disk cache off --


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Iterator[srv.Server]:
    home = home_for(tmp_path_factory.mktemp("kv8") / "home", demo_home)
    with srv.running(home, "--model", "fast", "--kv-bits", "8", "--disk-cache-gb", "0") as s:
        yield s


def test_kv_bits_8_still_answers_paris(quantized: srv.Server) -> None:
    assert "KV cache 8-bit" in quantized.log_text()
    body = ok(quantized.chat(CAPITAL, max_tokens=8))
    assert "Paris" in body["choices"][0]["message"]["content"]
    again = ok(quantized.chat(CAPITAL, max_tokens=8))  # from the quantized prompt cache
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert again["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"]


def test_disk_cache_gb_0_writes_nothing_even_at_shutdown(quantized: srv.Server) -> None:
    assert srv.stop(quantized) == 0
    assert not (quantized.home / "cache").exists()


# -- the disk prompt cache across a restart --


def test_the_prompt_cache_survives_a_sigterm_restart_and_cache_clear_removes_it(
    tmp_path: Path, demo_home: Path
) -> None:
    home = home_for(tmp_path / "home", demo_home)
    with srv.running(home, "--model", "fast", "--disk-cache-gb", "4") as first:
        cold = ok(first.chat(CACHED_PROMPT, max_tokens=2))
        assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert srv.stop(first) == 0  # SIGTERM: the engine saves before the process exits
    files = cache_files(home)
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert not [p for p in (home / "cache" / DEMO_ID).iterdir() if p.name.startswith(".")]

    with srv.running(home, "--model", "fast", "--disk-cache-gb", "4") as second:
        warm = ok(second.chat(CACHED_PROMPT, max_tokens=2))
        assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        assert warm["choices"][0]["message"]["content"] == cold["choices"][0]["message"]["content"]

    cleared = run_cli("cache", "clear", "--home", home)
    assert cleared.returncode == 0, cleared.stderr
    assert cache_files(home) == []
