"""docs/automations.md: every marked example runs against the real server with the demo model."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import docs_runner as docs
from tests import server as srv
from tests.conftest import CACHE, DEMO_ID, LOGGING_FLAGS, ROOT
from tests.docs_runner import Ctx

DOC = ROOT / "docs" / "automations.md"
TEXT = DOC.read_text()
BLOCKS = docs.parse(TEXT)
MARKED = [b.name for b in BLOCKS if b.name]
NODE_DIR = CACHE / "node"  # gitignored with the rest of tests/.cache

# The prompt the AppleScript and shell recipes send: everything that breaks naive quoting.
DANGEROUS = 'It\'s "quoted" & $dangerous'


@pytest.fixture(scope="module")
def served(servers: srv.Servers, demo_home: Path) -> srv.Server:
    """One server for every doc example, shared with the serve-flags test of --log-prompts.

    --log-prompts lets a test read what the server received (the intact prompt);
    --max-queue 1 lets the retry recipe meet a real 429 with only two requests in the way.
    """
    return servers.get(demo_home, *LOGGING_FLAGS)


@pytest.fixture(scope="module")
def ctx(served: srv.Server, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """The page's runner, pointed at the module's server."""
    return docs.page_ctx(BLOCKS, served, tmp_path_factory.mktemp("docs"), NODE_DIR)


def sse_text(body: str) -> tuple[str, list[str]]:
    """The streamed text of an SSE body, and its data payloads in order."""
    payloads = [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, payloads[:-1])
        if c["choices"]
    )
    return text, payloads


def new_log(server: srv.Server, since: int) -> str:
    """What the server logged after the first SINCE characters."""
    return server.log_text()[since:]


def received_intact(server: srv.Server, since: int) -> bool:
    """Whether the server (with --log-prompts) logged the dangerous prompt, unaltered, as one user message."""
    return f"prompt: {[('user', DANGEROUS)]!r}" in new_log(server, since)


def needs_node() -> None:
    """Skip where node or npm is missing; else make sure `openai` is installed for the JS examples."""
    problem = docs.node_problem()
    if problem:
        pytest.skip(f"node is not installed: {problem}, so the JavaScript examples cannot run")
    docs.ensure_openai_npm(NODE_DIR)


# --- one check per marked example: what running it must show --------------------------------------


def shell_key_reads_the_key_file(c: Ctx) -> None:
    out = c.run.run("shell-key", probe='printf "%s" "$KEY"').ok()
    assert out.stdout == c.server.key


def shell_key_cli_prints_the_same_key(c: Ctx) -> None:
    out = c.run.run("shell-key-cli", probe='printf "%s" "$KEY"').ok()
    assert out.stdout == c.server.key


def curl_health_says_ok_with_the_model(c: Ctx) -> None:
    out = c.run.run("curl-health").ok()
    assert json.loads(out.stdout) == {
        "status": "ok",
        "model": DEMO_ID,
        "last_model": DEMO_ID,
        "queue": 0,
        "speculative": "ngram",
    }


def curl_json_prints_the_answer_picked_from_the_json(c: Ctx) -> None:
    out = c.run.run("curl-json").ok()
    assert "Paris" in out.stdout
    assert "{" not in out.stdout  # python3 picked the text out of the JSON


def curl_plain_prints_only_the_answer_text(c: Ctx) -> None:
    out = c.run.run("curl-plain").ok()
    assert "Paris" in out.stdout
    assert not out.stdout.lstrip().startswith("{")


def curl_stream_prints_sse_events_ending_in_done(c: Ctx) -> None:
    out = c.run.run("curl-stream").ok()
    text, payloads = sse_text(out.stdout)
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[0])["object"] == "chat.completion.chunk"
    assert "Paris" in text


def py_setup_builds_a_client_that_reaches_the_server(c: Ctx) -> None:
    out = c.run.run("py-setup", probe="print([m.id for m in client.models.list().data])").ok()
    assert DEMO_ID in out.stdout


def py_ask_prints_paris(c: Ctx) -> None:
    assert "Paris" in c.run.run("py-ask").ok().stdout


def py_stream_prints_paris_as_it_streams(c: Ctx) -> None:
    assert "Paris" in c.run.run("py-stream").ok().stdout


def py_retry_waits_out_a_real_429_and_then_answers(c: Ctx) -> None:
    # Fill the engine and the one-place line (--max-queue 1), so the example's first try gets 429.
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 100."}],
        "temperature": 0,
        "max_tokens": 12,
    }

    def occupy() -> None:
        with c.server.client() as client:
            client.post("/v1/chat/completions", json=body)

    blockers = [threading.Thread(target=occupy) for _ in range(2)]
    for t in blockers:
        t.start()
        time.sleep(0.3)  # in this order: the first holds the engine, the second waits
    try:
        deadline = time.monotonic() + 10
        with c.server.client() as client:
            while client.get("/health").json()["queue"] < 1:
                assert time.monotonic() < deadline, "the blocking requests never filled the line"
                time.sleep(0.05)
        out = c.run.run("py-retry").ok()
    finally:
        for t in blockers:
            t.join(120)
    assert "server busy (429), retrying in" in out.stderr
    assert "Paris" in out.stdout


def js_setup_builds_a_client_that_reaches_the_server(c: Ctx) -> None:
    needs_node()
    probe = "console.log((await client.models.list()).data.map((m) => m.id));"
    assert DEMO_ID in c.run.run("js-setup", probe=probe).ok().stdout


def js_ask_prints_paris(c: Ctx) -> None:
    needs_node()
    assert "Paris" in c.run.run("js-ask").ok().stdout


def js_stream_prints_paris_as_it_streams(c: Ctx) -> None:
    needs_node()
    assert "Paris" in c.run.run("js-stream").ok().stdout


def applescript_delivers_quotes_apostrophes_ampersands_and_dollars_intact(c: Ctx) -> None:
    since = len(c.server.log_text())
    out = c.run.run("applescript").ok()
    assert len(out.commands) == 1 and docs.quoted_form(DANGEROUS) in out.commands[0]
    assert out.stdout.strip(), "display dialog showed an empty answer"
    assert not out.stdout.lstrip().startswith("{"), out.stdout  # plain text, not an error body
    assert received_intact(c.server, since), new_log(c.server, since)


def shell_ask_delivers_the_prompt_argument_intact(c: Ctx) -> None:
    since = len(c.server.log_text())
    out = c.run.run("shell-ask", DANGEROUS).ok()
    assert out.stdout.strip() and not out.stdout.lstrip().startswith("{"), out.stdout
    assert received_intact(c.server, since), new_log(c.server, since)


def applescript_ask_runs_the_saved_ask_script(c: Ctx) -> None:
    # As the page says: the shell recipe saved as ~/bin/ask (HOME is the runner's fake one).
    ask = c.run.fake_home / "bin" / "ask"
    ask.parent.mkdir(exist_ok=True)
    ask.write_text(c.run.source("shell-ask"))
    ask.chmod(0o755)
    since = len(c.server.log_text())
    out = c.run.run("applescript-ask").ok()
    assert out.commands == [f"$HOME/bin/ask {docs.quoted_form(DANGEROUS)}"]
    assert out.stdout.strip() and not out.stdout.lstrip().startswith("{"), out.stdout
    assert received_intact(c.server, since), new_log(c.server, since)


def curl_schema_prints_a_field_of_the_constrained_json(c: Ctx) -> None:
    out = c.run.run("curl-schema").ok()
    assert out.stdout.strip() in {"France", "Italy", "Japan"}, out.stdout


def applescript_schema_reads_a_field_of_the_constrained_json(c: Ctx) -> None:
    out = c.run.run("applescript-schema").ok()
    assert len(out.commands) == 1 and "json_schema" in out.commands[0]
    assert out.stdout.strip() in {"France", "Italy", "Japan"}, out.stdout


def login_print_writes_the_launchd_plist_and_the_systemd_unit(c: Ctx) -> None:
    out = c.run.run("login-print").ok()
    assert "<string>ai.tholos.mlx</string>" in out.stdout
    assert "Restart=on-failure" in out.stdout
    assert str(c.server.home) in out.stdout


CHECKS: dict[str, Callable[[Ctx], None]] = {
    "shell-key": shell_key_reads_the_key_file,
    "shell-key-cli": shell_key_cli_prints_the_same_key,
    "curl-health": curl_health_says_ok_with_the_model,
    "curl-json": curl_json_prints_the_answer_picked_from_the_json,
    "curl-plain": curl_plain_prints_only_the_answer_text,
    "curl-stream": curl_stream_prints_sse_events_ending_in_done,
    "py-setup": py_setup_builds_a_client_that_reaches_the_server,
    "py-ask": py_ask_prints_paris,
    "py-stream": py_stream_prints_paris_as_it_streams,
    "py-retry": py_retry_waits_out_a_real_429_and_then_answers,
    "js-setup": js_setup_builds_a_client_that_reaches_the_server,
    "js-ask": js_ask_prints_paris,
    "js-stream": js_stream_prints_paris_as_it_streams,
    "applescript": applescript_delivers_quotes_apostrophes_ampersands_and_dollars_intact,
    "shell-ask": shell_ask_delivers_the_prompt_argument_intact,
    "applescript-ask": applescript_ask_runs_the_saved_ask_script,
    "curl-schema": curl_schema_prints_a_field_of_the_constrained_json,
    "applescript-schema": applescript_schema_reads_a_field_of_the_constrained_json,
    "login-print": login_print_writes_the_launchd_plist_and_the_systemd_unit,
}


# --- the page itself --------------------------------------------------------------------------------


def test_every_code_block_is_marked_as_tested_or_says_why_not() -> None:
    unmarked = [
        f"line {b.line} ({b.lang})"
        for b in BLOCKS
        if b.lang in docs.RUNNABLE and not b.name and not b.not_tested
    ]
    assert not unmarked, (
        f"code blocks with neither <!-- test: NAME --> nor <!-- not tested: WHY -->: {unmarked}"
    )
    wrong = [f"line {b.line}: {b.lang!r}" for b in BLOCKS if b.name and b.lang not in docs.RUNNABLE]
    assert not wrong, f"marked to run, but no runner for the language: {wrong}"


def test_every_marked_example_has_a_check_and_every_check_an_example() -> None:
    assert len(MARKED) == len(set(MARKED)), f"duplicate example names: {MARKED}"
    assert set(MARKED) == set(CHECKS), (
        f"examples without a check: {sorted(set(MARKED) - set(CHECKS))}; "
        f"checks without an example: {sorted(set(CHECKS) - set(MARKED))}"
    )
    for b in BLOCKS:
        assert b.after is None or b.after in MARKED, (
            f"line {b.line}: after {b.after!r}, which is not marked"
        )


def test_every_language_the_issue_names_has_runnable_examples() -> None:
    langs = {b.lang for b in BLOCKS if b.name}
    assert {"sh", "python", "js", "applescript"} <= langs


def test_the_page_has_the_shortcuts_and_applescript_recipes() -> None:
    for needle in (
        "## Shortcuts",
        "Get Contents of URL",
        "POST",
        "Authorization",
        "Content-Type",
        "Request Body: **JSON**",
        "**Array**",
        "**Dictionary**",
        "Get Dictionary Value",
        "choices → 1 → message → content",
        "`Accept` = `text/plain`",
        "## AppleScript",
        "do shell script",
        "quoted form of",
        "## One request at a time",
        "429",
        "503",
        "Retry-After",
        "--queue-timeout",
        "tholos-mlx launchd install",
        "tholos-mlx systemd install",
        "tholos-mlx key",
        "~/Library/Application Support/Tholos/api_key",
    ):
        assert needle in TEXT, f"docs/automations.md lacks {needle!r}"


def test_quoted_form_of_survives_the_shell_unchanged() -> None:
    for text in (DANGEROUS, "'", "''", "a\\b", "line\nbreak", "`cmd` $(cmd) ${x} !1 * ~"):
        out = subprocess.run(
            ["/bin/sh", "-c", f"printf '%s' {docs.quoted_form(text)}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout == text


def test_a_prompt_pasted_unescaped_into_the_json_would_have_been_refused(
    served: srv.Server,
) -> None:
    # The mistake the AppleScript and shell recipes avoid: the prompt pasted into the JSON text.
    naive = (
        'curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:'
        + str(served.port)
        + "/v1/chat/completions"
        ' -H "Authorization: Bearer $KEY" -H "Content-Type: application/json"'
        ' -d "{\\"messages\\": [{\\"role\\": \\"user\\", \\"content\\": \\"$1\\"}], \\"max_tokens\\": 1}"'
    )
    out = subprocess.run(
        ["bash", "-c", naive, "naive", DANGEROUS],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "KEY": served.key},
        check=False,
    )
    assert out.stdout == "400"


# --- running them -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MARKED)
def test_every_marked_example_runs_and_does_what_the_page_says(name: str, ctx: Ctx) -> None:
    CHECKS[name](ctx)
    assert name in ctx.run.ran, f"the check for {name!r} never ran it"


def test_the_key_recipes_find_the_macos_default_key_file_without_tholos_home(ctx: Ctx) -> None:
    # What a Mac user who never set THOLOS_HOME runs: the key under ~/Library/Application Support.
    default = ctx.run.fake_home / "Library" / "Application Support" / "Tholos"
    default.parent.mkdir(parents=True, exist_ok=True)
    if not default.exists():
        default.symlink_to(ctx.server.home)
    unset: dict[str, str | None] = {"THOLOS_HOME": None}
    assert (
        ctx.run.run("shell-key", probe='printf "%s" "$KEY"', env=unset).ok().stdout
        == ctx.server.key
    )
    probe = "print([m.id for m in client.models.list().data])"
    assert DEMO_ID in ctx.run.run("py-setup", probe=probe, env=unset).ok().stdout
    if docs.node_problem() is None:
        docs.ensure_openai_npm(NODE_DIR)
        probe = "console.log((await client.models.list()).data.map((m) => m.id));"
        assert DEMO_ID in ctx.run.run("js-setup", probe=probe, env=unset).ok().stdout


def test_the_examples_left_the_server_healthy_with_an_empty_line(served: srv.Server) -> None:
    r = httpx.get(f"{served.base}/health", headers=served.headers, timeout=10)
    assert r.status_code == 200 and r.json()["queue"] == 0
