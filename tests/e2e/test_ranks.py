"""serve --hostfile with two ranks on 127.0.0.1 (ring backend, CPU): the same answers as one
process, a cancel that frees both ranks, and a dead rank that ends the server non-zero."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import server as srv
from tests.conftest import run_cli

DEMO = "smollm2-135m"
TINY = "tiny-qwen2"
PROMPTS = ["What is the capital of France?", "Write one sentence about the sea."]
MAX_TOKENS = 10


def _hostfile(where: Path) -> Path:
    path = where / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    path.write_text(json.dumps([local, local]))
    return path


def _tiny_pipeline_model(folder: Path, tokenizer_from: Path) -> None:
    """A random qwen2 whose 3 heads do not split in two: mlx-lm's `pipeline` carries it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    config = {
        "model_type": "qwen2",
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "intermediate_size": 128,
        "num_attention_heads": 3,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-6,
        "vocab_size": 49152,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    }
    mx.random.seed(7)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)


@pytest.fixture(scope="module")
def ranks_home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo home, copied, with the tiny pipeline model added."""
    home = tmp_path_factory.mktemp("ranks-home") / "home"
    shutil.copytree(demo_home, home)
    tiny = home.parent / "tiny-qwen2"
    _tiny_pipeline_model(tiny, home / "models" / DEMO)
    out = run_cli("models", "add", tiny, "--id", TINY, "--home", home)
    assert out.returncode == 0, out.stderr
    return home


def _answers(server: srv.Server, model: str) -> list[tuple[str, str]]:
    """Each prompt's greedy answer, not streamed and streamed."""
    got = []
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        r = server.chat(messages, model=model, max_tokens=MAX_TOKENS)
        assert r.status_code == 200, r.text
        whole = r.json()["choices"][0]["message"]["content"]
        got.append((whole, _streamed(server, messages, model)))
    return got


def _streamed(server: srv.Server, messages: list[dict[str, str]], model: str) -> str:
    body = {"messages": messages, "model": model, "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream": True}  # fmt: skip
    text = []
    with server.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                text.append(delta.get("content") or "")
    return "".join(text)


@pytest.fixture(scope="module")
def one_process(ranks_home: Path) -> dict[str, Any]:
    """What one process answers, for both models."""
    with srv.running(ranks_home, "--model", DEMO) as server:
        got = {model: _answers(server, model) for model in (DEMO, TINY)}
        as_json = {"response_format": {"type": "json_object"}, "max_tokens": MAX_TOKENS}
        asked = [{"role": "user", "content": "Give the capital of France as JSON."}]
        message = server.chat(asked, model=DEMO, **as_json).json()["choices"][0]["message"]
        return {**got, "json": [(message, "")]}


@pytest.fixture(scope="module")
def group(ranks_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[srv.Server]:
    """Two ranks on 127.0.0.1 serving the demo model."""
    hosts = _hostfile(tmp_path_factory.mktemp("hosts"))
    server = srv.start(ranks_home, "--model", DEMO, "--hostfile", str(hosts))
    try:
        yield server
    finally:
        code = srv.stop(server, timeout=30)
    assert code == 0, server.log_text()[-2000:]  # SIGTERM stops the whole group, cleanly


def test_two_ranks_answer_as_one_process_does_streamed_and_not(
    one_process: dict[str, Any], group: srv.Server
) -> None:
    got = _answers(group, DEMO)
    assert got == one_process[DEMO]
    assert "Paris" in got[0][0]
    # A grammar steers every rank alike: the same JSON as one process.
    as_json = {"response_format": {"type": "json_object"}, "max_tokens": MAX_TOKENS}
    asked = [{"role": "user", "content": "Give the capital of France as JSON."}]
    assert (
        group.chat(asked, model=DEMO, **as_json).json()["choices"][0]["message"]
        == one_process["json"][0][0]
    )
    # Every rank kept the same prompt cache: the question asked again reuses its prefix.
    again = group.chat([{"role": "user", "content": PROMPTS[0]}], model=DEMO, max_tokens=2)
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    with group.client() as c:
        health = c.get("/health").json()
    assert health["ranks"] == 2 and health["ranks_up"] == [0, 1]


def test_a_pipeline_model_split_across_two_ranks_answers_as_one_process_does(
    one_process: dict[str, Any], group: srv.Server
) -> None:
    assert _answers(group, TINY) == one_process[TINY]
    assert "pipeline" in group.log_text()


def test_a_cancelled_stream_frees_both_ranks_for_the_next_request(group: srv.Server) -> None:
    body = {"messages": [{"role": "user", "content": "Count from one to one hundred."}],
            "model": DEMO, "max_tokens": 400, "temperature": 0, "stream": True}  # fmt: skip
    with group.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n > 4:
                break  # leaving the with-block closes the connection mid-answer
    r2 = group.chat([{"role": "user", "content": PROMPTS[0]}], model=DEMO, max_tokens=MAX_TOKENS)
    assert r2.status_code == 200
    assert "Paris" in r2.json()["choices"][0]["message"]["content"]
    assert re.search(r"cancelled after \d+ tokens", group.log_text())


def test_killing_rank_1_mid_answer_ends_the_answer_with_an_error_and_the_server_non_zero(
    ranks_home: Path, tmp_path: Path
) -> None:
    hosts = _hostfile(tmp_path)
    server = srv.start(ranks_home, "--model", DEMO, "--hostfile", str(hosts))
    try:
        found = re.search(r"rank 1 of 2: following rank 0 \(pid (\d+)\)", server.log_text())
        assert found, server.log_text()[-2000:]
        body = {"messages": [{"role": "user", "content": "Count from one to one hundred."}],
                "model": DEMO, "max_tokens": 400, "temperature": 0, "stream": True}  # fmt: skip
        lines = []
        with (
            server.client(timeout=60) as c,
            c.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 4:
                    os.kill(int(found.group(1)), signal.SIGKILL)
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert "error" in events[-1], lines[-3:]
        assert "data: [DONE]" not in lines
        started = time.monotonic()
        code = server.proc.wait(30)
        assert code != 0
        assert time.monotonic() - started < 30
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.base}/health", timeout=2)
    finally:
        srv.stop(server)
