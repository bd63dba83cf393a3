"""What Claude Code and Codex really sent (tests/fixtures/agents), replayed: each is served.

The fake engine answers, so this checks what the server accepts and how the request reaches the
engine; the e2e lane drives the real CLIs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import LiveServer, Script, live_server
from tholos_mlx.events import ToolCallDelta, ToolCallStart
from tholos_mlx.schema_check import WARNINGS_HEADER

FIXTURES = Path(__file__).parent.parent / "fixtures" / "agents"
_KEPT_HEADERS = ("anthropic-beta", "anthropic-version", "content-type", "user-agent", "x-app")


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("home")) as s:
        yield s


def replay(server: LiveServer, name: str) -> tuple[Any, str]:
    """POST the recorded body to its path and query, with its own headers and this key."""
    rec = recorded(name)
    headers = {k: v for k, v in rec["headers"].items() if k in _KEPT_HEADERS}
    with server.client(headers={**headers, "x-api-key": server.key}) as c:
        # the fake's home installs `alpha`; the recording named the demo model
        r = c.post(rec["path"], params=rec["query"], json={**rec["body"], "model": "alpha"})
    return r, r.text


@pytest.mark.parametrize("name", ["claude-code-turn1.json", "claude-code-turn2.json"])
def test_claude_codes_recorded_turns_are_streamed_back(server: LiveServer, name: str) -> None:
    before = len(server.engine.jobs)
    r, text = replay(server, name)
    assert r.status_code == 200, text
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    # TaskCreate and TaskUpdate carry zod records: served, the gap said in the header
    assert "propertyNames" in r.headers[WARNINGS_HEADER]
    req = server.engine.wait_jobs(before + 1)[-1].request
    roles = [m.role for m in req.messages]
    assert roles[0] == "system" and "system" in roles[1:]  # the system turn inside messages
    assert len(req.tools) == len(recorded(name)["body"]["tools"])


def test_codexs_recorded_turn_is_streamed_back_a_namespaced_call_named_as_codex_reads_it(
    server: LiveServer,
) -> None:
    events = (ToolCallStart(0, "call_1", "spawn_agent"), ToolCallDelta(0, "{}"))
    server.engine.scripts.append(Script(events=events, finish_reason="tool_calls"))
    before = len(server.engine.jobs)
    r, text = replay(server, "codex-turn1.json")
    assert r.status_code == 200, text
    datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert datas[-1]["type"] == "response.completed"
    done = [d["item"] for d in datas if d["type"] == "response.output_item.done"]
    assert done[-1]["name"] == "spawn_agent" and done[-1]["namespace"] == "multi_agent_v1"
    req = server.engine.wait_jobs(before + 1)[-1].request
    body = recorded("codex-turn1.json")["body"]
    functions = [t for t in body["tools"] if t["type"] == "function"]
    namespaced = [f for t in body["tools"] if t["type"] == "namespace" for f in t["tools"]]
    assert len(req.tools) == len(functions) + len(namespaced)  # web_search left out
    assert server.app.ctx.responses.get(datas[-1]["response"]["id"]) is None  # store: false
