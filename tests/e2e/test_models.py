"""End to end: no model, switching between installed ids, a broken folder, memory, and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import server as srv
from tests.conftest import DEMO_ID
from tholos_mlx.machine import rss_bytes, total_memory_bytes

TINY = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def two_models(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose tier table names the demo folder twice (ids a and b) and a broken folder."""
    home = tmp_path_factory.mktemp("two-models")
    demo = demo_home / "models" / DEMO_ID
    broken = home / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (broken / "model.safetensors").write_bytes(b"not really safetensors")
    (broken / "tokenizer.json").write_text("{}")
    huge = home / "models" / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (huge / "tokenizer.json").write_text("{}")
    with (huge / "model.safetensors").open("wb") as f:  # sparse: no disk is used
        f.truncate(4 * max(total_memory_bytes(), 2**30))
    (home / "tiers.toml").write_text(
        f'[models.a]\npath = "{demo}"\ntier = "fast"\n\n'
        f'[models.b]\npath = "{demo}"\ntier = "other"\n\n'
        '[models.gone]\npath = "models/not-there"\ntier = "fast"\n\n'
        '[models.broken]\npath = "models/broken"\ntier = "broken"\n\n'
        '[models.huge]\npath = "models/huge"\ntier = "huge"\n'
    )
    return home


@pytest.fixture(scope="module")
def idle(two_models: Path) -> Iterator[srv.Server]:
    """A server started without --model."""
    with srv.running(two_models) as s:
        yield s


def loaded(server: srv.Server) -> str | None:
    with server.client() as c:
        return c.get("/health").json()["model"]  # type: ignore[no-any-return]


def test_nothing_loaded_and_no_model_named_answers_503_naming_the_models_list(
    idle: srv.Server,
) -> None:
    assert loaded(idle) is None
    r = idle.chat(TINY, max_tokens=1)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "service_unavailable" and "/v1/models" in err["message"]


def test_a_missing_folder_is_left_out_of_the_list_and_named_in_the_log(idle: srv.Server) -> None:
    with idle.client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert ids[:2] == ["a", "b"] and "gone" not in ids
    assert "gone" in idle.log_text()


def test_naming_a_model_switches_to_it_and_a_tier_resolves_to_its_first_model(
    idle: srv.Server,
) -> None:
    r = idle.chat(TINY, model="other", max_tokens=1)
    assert r.status_code == 200 and r.json()["model"] == "b"
    assert loaded(idle) == "b"
    r = idle.chat(TINY, model="a", max_tokens=1)
    assert r.status_code == 200 and r.json()["model"] == "a"
    with idle.client() as c:
        flags = {m["id"]: m["loaded"] for m in c.get("/v1/models").json()["data"]}
    assert flags["a"] is True and flags["b"] is False
    r = idle.chat(TINY, model="", max_tokens=1)
    assert r.json()["model"] == "a"


def test_switching_models_drops_the_old_models_prompt_cache(idle: srv.Server) -> None:
    assert idle.chat(TINY, model="a", max_tokens=1).status_code == 200
    warm = idle.chat(TINY, model="a", max_tokens=1).json()
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    switched = idle.chat(TINY, model="b", max_tokens=1).json()
    assert switched["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_a_folder_that_fails_to_load_gets_a_clear_error_and_the_old_model_keeps_serving(
    idle: srv.Server,
) -> None:
    assert idle.chat(TINY, model="a", max_tokens=1).status_code == 200
    r = idle.chat(TINY, model="broken", max_tokens=1)
    assert r.status_code == 503
    err = r.json()["error"]
    assert "broken" in err["message"] and "Traceback" not in r.text
    assert loaded(idle) == "a"
    assert idle.chat(TINY, max_tokens=1).status_code == 200


def test_a_model_larger_than_memory_gets_503_before_the_loaded_one_is_released(
    idle: srv.Server,
) -> None:
    assert idle.chat(TINY, model="a", max_tokens=1).status_code == 200
    r = idle.chat(TINY, model="huge", max_tokens=1)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "service_unavailable" and err["code"] == "model_too_large"
    assert "GiB" in err["message"]
    assert loaded(idle) == "a"


def test_ten_switches_leave_resident_memory_about_where_one_switch_left_it(
    idle: srv.Server, demo_home: Path
) -> None:
    weights = sum(p.stat().st_size for p in (demo_home / "models" / DEMO_ID).glob("*.safetensors"))
    for name in ("a", "b"):
        assert idle.chat(TINY, model=name, max_tokens=1).status_code == 200
    after_one = rss_bytes(idle.proc.pid), mlx_active_bytes(idle)
    for n in range(10):
        assert idle.chat(TINY, model="ab"[n % 2], max_tokens=1).status_code == 200
    after_ten = rss_bytes(idle.proc.pid), mlx_active_bytes(idle)
    # A leak would keep every old copy of the weights: 10 switches would add ~10x their size.
    # RSS, and MLX's own count: on a Mac, Metal buffers do not show in RSS.
    for one, ten in zip(after_one, after_ten):
        assert ten - one < max(64 * 2**20, weights // 2), {"rss, mlx": (after_one, after_ten)}


def mlx_active_bytes(server: srv.Server) -> int:
    """MLX's active memory as the server last logged it (at its latest model load)."""
    found = re.findall(r"MLX memory active (\d+) MiB", server.log_text())
    assert found, "the server logs MLX's memory at each load"
    return int(found[-1]) * 2**20


def test_sigterm_stops_the_running_generation_refuses_waiters_and_exits_0(demo_home: Path) -> None:
    server = srv.start(demo_home, "--model", "fast")
    try:
        body = {
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "temperature": 0,
            "max_tokens": 300,
            "stream": True,
        }
        lines: list[str] = []
        first = threading.Event()

        def stream() -> None:
            with server.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if '"content":"' in line and '"role"' not in line:
                        first.set()
            first.set()

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        assert first.wait(120)
        sent = time.monotonic()
        code = srv.stop(server, signal.SIGTERM, timeout=15)
        took = time.monotonic() - sent
        reader.join(10)
    finally:
        srv.stop(server)
    assert code == 0, server.log_text()[-2000:]
    assert took < 5.0
    assert "data: [DONE]" not in lines  # the cut-short stream does not pretend it finished


def test_sigterm_while_the_startup_model_loads_stops_cleanly_with_0(demo_home: Path) -> None:
    log = demo_home.parent / "serve-sigterm-while-loading.log"
    env = {**os.environ, "THOLOS_HOME": str(demo_home), "PYTHONUNBUFFERED": "1"}
    port = str(srv.free_port())
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tholos_mlx", "serve", "--home", str(demo_home)]
            + ["--port", port, "--model", "fast", "--disk-cache-gb", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while "loading smollm2-135m" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert code == 0, text[-2000:]
    assert "Traceback" not in text
