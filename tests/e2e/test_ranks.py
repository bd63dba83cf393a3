"""serve --hostfile with two ranks on 127.0.0.1 (ring backend, CPU): the same answers as one
process, a cancel that frees both ranks, and a dead rank that ends the server non-zero."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import server as srv
from tests.conftest import run_cli
from tests.tiny_model import write_model

DEMO = "smollm2-135m"
TINY = "tiny-qwen2"
TENSOR = "tiny-llama"  # 4 heads, 2 KV heads: split tensor-parallel
PROMPTS = ["What is the capital of France?", "Write one sentence about the sea."]
MAX_TOKENS = 10


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user and system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        return 0.0  # gone
    except OSError:  # no /proc (macOS): ps gives [[DD-]HH:]MM:SS.cc
        out = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True)
        seconds = 0.0
        for part in out.stdout.strip().replace("-", ":").split(":") if out.stdout.strip() else []:
            seconds = seconds * 60 + float(part)
        return seconds


def _tree(root: int) -> list[int]:
    """ROOT and every process under it."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        found.append(pid := todo.pop())
        todo += children.get(pid, [])
    return found


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
    """The demo home, copied, with a tiny pipeline model and a tiny tensor-parallel one added."""
    home = tmp_path_factory.mktemp("ranks-home") / "home"
    shutil.copytree(demo_home, home)
    tiny = home.parent / "tiny-qwen2"
    _tiny_pipeline_model(tiny, home / "models" / DEMO)
    out = run_cli("models", "add", tiny, "--id", TINY, "--home", home)
    assert out.returncode == 0, out.stderr
    tensor = write_model(home.parent / TENSOR, seed=3)
    out = run_cli("models", "add", tensor, "--id", TENSOR, "--home", home)
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


# Requests whose answer a grammar or a stop string shapes: every rank alike.
SHAPED: dict[str, tuple[str, dict[str, Any]]] = {
    "json": ("Give the capital of France as JSON.", {"response_format": {"type": "json_object"}}),
    "stop": (PROMPTS[0], {"stop": [" Paris"]}),
    # A forced tool call: the call grammar on every rank, the call read back on rank 0.
    "tool": (
        "What is the weather in Paris?",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                            "required": ["city"],
                            "additionalProperties": False,
                        },
                    },
                }
            ],
            "tool_choice": "required",
            "max_tokens": 40,
        },
    ),
    # Speculation: every rank verifies the same drafted tokens in the same passes.
    "predicted": (
        PROMPTS[0],
        {"prediction": {"type": "content", "content": "The capital of France is Paris."}},
    ),
}


def _shaped(server: srv.Server) -> dict[str, Any]:
    """Each shaped request's message, finish reason and drafted tokens accepted."""
    got = {}
    for name, (prompt, fields) in SHAPED.items():
        asked = [{"role": "user", "content": prompt}]
        r = server.chat(asked, model=DEMO, **{"max_tokens": MAX_TOKENS, **fields})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        details = r.json()["usage"].get("completion_tokens_details")
        message = choice["message"]
        for call in message.get("tool_calls") or ():
            call.pop("id")  # made up per answer; the call itself must match
        got[name] = (message, choice["finish_reason"], details)
    return got


@pytest.fixture(scope="module")
def one_process(ranks_home: Path) -> dict[str, Any]:
    """What one process answers, for every model, and to the shaped requests."""
    with srv.running(ranks_home, "--model", DEMO) as server:
        got: dict[str, Any] = {model: _answers(server, model) for model in (DEMO, TINY, TENSOR)}
        return {**got, "shaped": _shaped(server)}


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
    # A grammar, a stop string and a prediction to verify steer every rank alike.
    shaped = _shaped(group)
    assert shaped == one_process["shaped"]
    assert shaped["stop"][1] == "stop"
    assert shaped["tool"][1] == "tool_calls"
    called = shaped["tool"][0]["tool_calls"][0]["function"]
    assert json.loads(called["arguments"])["city"] in ("Paris", "Rome")
    assert shaped["predicted"][2]["accepted_prediction_tokens"] > 0
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


def test_a_tensor_parallel_model_split_across_two_ranks_answers_as_one_process_does(
    one_process: dict[str, Any], group: srv.Server
) -> None:
    assert _answers(group, TENSOR) == one_process[TENSOR]
    assert "(tensor parallel)" in group.log_text()


def test_a_draft_model_drafting_across_two_ranks_changes_no_answer(
    one_process: dict[str, Any], ranks_home: Path, tmp_path: Path
) -> None:
    # The demo model drafting for itself (the same tokenizer, so its drafts are mostly kept):
    # every rank runs the draft model alike and verifies the same drafts in the same passes.
    hosts = _hostfile(tmp_path)
    flags = ("--speculative", "draft", "--draft-model", DEMO)
    with srv.running(ranks_home, "--model", DEMO, "--hostfile", str(hosts), *flags) as server:
        messages = [{"role": "user", "content": PROMPTS[0]}]
        r = server.chat(messages, model=DEMO, max_tokens=MAX_TOKENS)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == one_process[DEMO][0][0]
        assert _streamed(server, messages, DEMO) == one_process[DEMO][0][1]
        log = server.log_text()
    assert log.count("loaded draft model") == 2, log[-2000:]  # one per rank
    drafted = [int(n) for n in re.findall(r"drafted=(\d+)", log)]
    assert drafted and max(drafted) > 0


def test_an_idle_group_sleeps_launcher_and_ranks_alike(group: srv.Server) -> None:
    # mlx.launch as shipped spins a core on its ranks' stdin pipes, and MLX's ring backend
    # spins one in a rank waiting in a collective for rank 0's next job: all day, on battery.
    r = group.chat([{"role": "user", "content": PROMPTS[0]}], model=DEMO, max_tokens=2)
    assert r.status_code == 200, r.text
    pids = _tree(group.proc.pid)
    assert len(pids) >= 4, pids  # serve --hostfile, the launcher, two ranks (and their shells)
    before = sum(_cpu_seconds(pid) for pid in pids)
    time.sleep(4)
    used = sum(_cpu_seconds(pid) for pid in pids) - before
    assert used < 1.0, f"an idle group used {used:.1f} CPU seconds in 4 s"  # one spinner: ~4


def test_every_rank_saves_its_own_prompt_cache_at_a_stop_and_an_idle_unload_and_reads_it_back(
    ranks_home: Path, tmp_path: Path
) -> None:
    # Both ranks share one home here (two Macs have one each): each keeps its own part.
    hosts = _hostfile(tmp_path)
    flags = ("--model", DEMO, "--hostfile", str(hosts), "--disk-cache-gb", "1")
    question = [{"role": "user", "content": "Name a large ocean."}]
    with srv.running(ranks_home, *flags) as server:
        first = server.chat(question, model=DEMO, max_tokens=MAX_TOKENS)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert server.proc.returncode == 0, server.log_text()[-2000:]
    parts = ranks_home / "cache" / DEMO
    for part in ("rank0of2", "rank1of2"):
        assert list((parts / part).glob("*.safetensors")), f"{part} saved no prompt cache"
    with srv.running(ranks_home, *flags, "--idle-unload", "3s") as server:
        again = server.chat(question, model=DEMO, max_tokens=MAX_TOKENS)
        assert server.log_text().count("prompt caches restored from disk") == 2  # one per rank
        assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        assert again.json()["choices"] == first.json()["choices"]
        # Idle: every rank unloads (its cache to disk), and the next request loads every rank.
        deadline = time.monotonic() + 60
        while server.log_text().count(f"unloaded {DEMO}") < 2:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.2)
        with server.client() as c:
            assert c.get("/health").json()["model"] is None
        after = server.chat(question, model=DEMO, max_tokens=MAX_TOKENS)
        log = server.log_text()
    assert log.count("prompt caches restored from disk") == 4, log[-2000:]
    assert after.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert after.json()["choices"] == first.json()["choices"]
    out = run_cli("cache", "clear", DEMO, "--home", ranks_home)  # the parts go with the model
    assert out.returncode == 0, out.stderr
    assert not parts.exists()


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


def _wait_until_queued(server: srv.Server) -> None:
    """Return once /health counts a request waiting behind the one in flight."""
    deadline = time.monotonic() + 60
    with server.client(timeout=10) as c:
        while c.get("/health").json()["queue"] < 1:
            assert time.monotonic() < deadline, "the queued request never reached the queue"
            time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_rank_1_killed_or_frozen_mid_answer_ends_the_answer_with_an_error_and_the_server_non_zero(
    ranks_home: Path, tmp_path: Path, sig: int
) -> None:
    hosts = _hostfile(tmp_path)
    server = srv.start(ranks_home, "--model", DEMO, "--hostfile", str(hosts))
    found = re.search(r"rank 1 of 2: following rank 0 \(pid (\d+)\)", server.log_text())
    assert found, server.log_text()[-2000:]
    rank1 = int(found.group(1))
    try:
        body = {"messages": [{"role": "user", "content": "Count from one to one hundred."}],
                "model": DEMO, "max_tokens": 400, "temperature": 0, "stream": True}  # fmt: skip
        lines: list[str] = []
        queued: list[httpx.Response] = []
        question = [{"role": "user", "content": PROMPTS[0]}]
        waiter = threading.Thread(
            target=lambda: queued.append(server.chat(question, model=DEMO, max_tokens=2))
        )
        with (
            server.client(timeout=60) as c,
            c.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 4:
                    waiter.start()  # waits its turn behind the answer in flight
                    _wait_until_queued(server)  # else a fast exit could beat its connection
                    os.kill(rank1, sig)  # SIGSTOP: alive, its sockets open, silent
                    hit = time.monotonic()
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert "error" in events[-1], lines[-3:]
        assert "data: [DONE]" not in lines
        assert time.monotonic() - hit < 30
        waiter.join(30)
        assert queued and queued[0].status_code == 503, queued
        assert int(queued[0].headers["retry-after"]) > 0
        code = server.proc.wait(max(1.0, 35 - (time.monotonic() - hit)))  # 30 s + teardown
        assert code != 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.base}/health", timeout=2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank1, signal.SIGKILL)  # a frozen rank must not outlive a failed test
        srv.stop(server)


def test_a_frozen_rank_0_whose_peer_cannot_end_it_still_ends_the_server_non_zero(
    ranks_home: Path, tmp_path: Path
) -> None:
    """Two Macs: rank 1 notices a frozen rank 0 but can end only its own side, and mlx.launch on
    the first Mac would wait for rank 0 forever. Both ranks frozen is that case on one machine:
    serve --hostfile's own watch of rank 0's /health must end the group."""
    hosts = _hostfile(tmp_path)
    server = srv.start(ranks_home, "--model", DEMO, "--hostfile", str(hosts))
    deadline = time.monotonic() + 30  # before its first answer rank 0 is loading: not judged
    while "rank 0 answers GET /health; watching it" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        time.sleep(0.1)
    text = server.log_text()
    pids = [
        int(re.search(pattern, text).group(1))  # type: ignore[union-attr]
        for pattern in (r"rank 1 of 2: following rank 0 \(pid (\d+)\)",
                        r"rank 0 of 2: serving HTTP, leading the group \(pid (\d+)\)")
    ]  # fmt: skip
    try:
        for pid in pids:  # rank 1 first: it must not see rank 0 freeze and end the group itself
            os.kill(pid, signal.SIGSTOP)
        hit = time.monotonic()
        code = server.proc.wait(35)  # 30 s + teardown
        assert code != 0
        assert time.monotonic() - hit < 30
        assert "rank 0 has not answered GET /health" in server.log_text()
        deadline = time.monotonic() + 5
        while not all(_gone(pid) for pid in pids):  # killed with the group, stopped or not
            assert time.monotonic() < deadline, "a frozen rank outlived the server"
            time.sleep(0.1)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.stop(server)
