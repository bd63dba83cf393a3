"""End to end: the real Claude Code and Codex CLIs, default configuration, against the real server.

Both come from npm (tests/agent_clis.py installs them under tests/.cache/npm); only where npm is
absent are these skipped. HOME is a temp dir, telemetry is off and every URL is 127.0.0.1.
Live tool calls go through a recording proxy in the test, which reads what each CLI sends back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import agent_clis
from tests import server as srv
from tests.conftest import DEMO_ID
from tests.live_model import (
    DONE_ANSWER,
    MARKER,
    MARKER_LINE,
    READ_ID,
    SHELL_ID,
    write_live_models,
)
from tests.long_model import ANSWER, LONG_ID, write_agents_home
from tests.recording_proxy import recording

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 300  # seconds: a CLI that hangs fails the test instead of the lane


@pytest.fixture(scope="module")
def modules() -> Path:
    """node_modules holding both CLIs, installed once; skipped only where npm is absent."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node are not on PATH: the real agent CLIs cannot be installed")
    return agent_clis.install()


@pytest.fixture(scope="module")
def agents_home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (8k context) beside the long-context tiny llama and the two that call tools."""
    home = write_agents_home(tmp_path_factory.mktemp("agents-home"), demo_home)
    tiers = write_live_models(home / "models", home / "models" / DEMO_ID)
    with (home / "tiers.toml").open("a") as f:
        f.write("\n" + "\n".join(tiers.values()))
    return home


@pytest.fixture(scope="module")
def served(agents_home: Path) -> Iterator[srv.Server]:
    with srv.running(agents_home, "--default-max-tokens", "64") as s:
        yield s


NOTES = "The meeting moved to Thursday.\n"


def run_claude(
    modules: Path,
    server: srv.Server,
    tmp: Path,
    model: str,
    *extra: str,
    base: str | None = None,
    notes: str = NOTES,
) -> subprocess.CompletedProcess[str]:
    """`claude -p ... --model MODEL` in a scratch project, pointed at the server (or `base`)."""
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text(notes)
    return subprocess.run(
        [
            str(agent_clis.claude_binary(modules)),
            "-p",
            "What does notes.txt say?",
            "--model",
            model,
            *extra,
        ],
        env=agent_clis.claude_env(home, base or server.base, server.key),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_claude_code_on_an_8k_model_shows_anthropics_prompt_too_long_error(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_claude(modules, served, tmp_path, DEMO_ID)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert "prompt is too long" in said.lower(), said
    assert "Traceback" not in said and "Traceback" not in served.log_text()


def test_claude_code_on_a_128k_model_gets_the_models_answer_through_streamed_messages(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_claude(modules, served, tmp_path, LONG_ID, "--output-format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["is_error"] is False, result
    assert result["result"].strip() == ANSWER, (
        "the model's streamed answer is what Claude Code says"
    )
    usage = result["usage"]
    prompt = (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )
    assert prompt > 8192, "the whole default prompt (tools included) reached the model"
    assert "Traceback" not in served.log_text()


def run_codex(
    modules: Path,
    server: srv.Server,
    tmp: Path,
    model: str,
    base: str | None = None,
    notes: str = NOTES,
) -> subprocess.CompletedProcess[str]:
    """`codex exec --skip-git-repo-check ...` with a custom Responses provider at the server."""
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text(notes)
    return subprocess.run(
        [
            *agent_clis.codex_command(modules),
            "exec",
            "--skip-git-repo-check",
            "What does notes.txt say?",
        ],
        env=agent_clis.codex_env(home, f"{base or server.base}/v1", server.key, model),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_codex_with_its_default_tools_gets_the_models_answer_through_responses(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_codex(modules, served, tmp_path, LONG_ID)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert out.stdout.strip() == ANSWER, said  # `codex exec` prints the final answer on stdout
    assert "Traceback" not in served.log_text()


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agents"


def replay(server: srv.Server, fixture: str, model: str) -> tuple[int, str]:
    """POST a recorded request as the agent sent it (its headers, query and body; our key)."""
    recorded = json.loads((FIXTURES / fixture).read_text())
    headers = {
        k: v
        for k, v in recorded["headers"].items()
        if k not in ("host", "content-length", "connection", "accept-encoding")
        and k not in ("x-api-key", "authorization")
    }
    body = {**recorded["body"], "model": model}
    with server.client(timeout=RUN_TIMEOUT) as c:
        r = c.post(
            recorded["path"], params=recorded["query"], json=body, headers=headers | server.headers
        )
    return r.status_code, r.text


def test_claude_codes_recorded_turn_with_a_tool_result_is_answered_as_a_stream(
    served: srv.Server,
) -> None:
    status, text = replay(served, "claude-code-turn2.json", LONG_ID)
    assert status == 200, text[:2000]
    assert text.startswith("event: message_start") and "event: message_stop" in text


def test_codexs_recorded_first_request_is_answered_as_a_completed_stream(
    served: srv.Server,
) -> None:
    status, text = replay(served, "codex-turn1.json", LONG_ID)
    assert status == 200, text[:2000]
    assert "event: response.created" in text and "event: response.completed" in text


def test_codex_on_an_8k_model_shows_the_context_error_and_exits_non_zero(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_codex(modules, served, tmp_path, DEMO_ID)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    # code context_length_exceeded is what Codex recognises and explains in its own words
    assert "ran out of room in the model's context window" in said, said
    assert "Traceback" not in served.log_text()


@pytest.mark.parametrize("trimmed", [(), ("--bare",)], ids=["default", "bare"])
def test_claude_code_makes_a_live_read_call_and_sends_the_files_content_back(
    modules: Path, served: srv.Server, tmp_path: Path, trimmed: tuple[str, ...]
) -> None:
    with recording(served.base) as proxy:
        out = run_claude(
            modules,
            served,
            tmp_path,
            READ_ID,
            *("--output-format", "json", "--max-turns", "3", *trimmed),
            base=proxy.base,
            notes=MARKER_LINE + "\n",
        )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert (result["result"].strip(), result["num_turns"]) == (DONE_ANSWER, 2), result
    first, second = proxy.posts("/v1/messages")
    assert MARKER.strip() not in json.dumps(first.body), "only the file may hold the marker"
    asked, answered = second.body["messages"][-2:]
    (call,) = [b for b in asked["content"] if b["type"] == "tool_use"]
    assert (call["name"], call["input"]) == ("Read", {"file_path": "notes.txt"})
    (back,) = [b for b in answered["content"] if b["type"] == "tool_result"]
    assert back["tool_use_id"] == call["id"] and not back.get("is_error")
    assert MARKER_LINE in json.dumps(back["content"]), "Claude Code read the file and sent it"
    assert "Traceback" not in served.log_text()


def test_codex_runs_a_live_shell_call_and_sends_its_output_back(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    with recording(served.base) as proxy:
        out = run_codex(
            modules, served, tmp_path, SHELL_ID, base=proxy.base, notes=MARKER_LINE + "\n"
        )
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert out.stdout.strip() == DONE_ANSWER, said
    first, second = proxy.posts("/v1/responses")
    assert MARKER.strip() not in json.dumps(first.body), "only the command's output may hold it"
    items = second.body["input"]
    (call,) = [i for i in items if i.get("type") == "function_call"]
    assert (call["name"], json.loads(call["arguments"])) == (
        "exec_command",
        {"cmd": "cat notes.txt"},
    )
    (back,) = [i for i in items if i.get("type") == "function_call_output"]
    assert back["call_id"] == call["call_id"]
    assert MARKER_LINE in back["output"], "Codex ran the command and sent its output"
    assert "Traceback" not in served.log_text()
