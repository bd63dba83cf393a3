"""docs/anthropic.md: every marked example runs against the real server with the demo model."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests import docs_runner as docs
from tests import server as srv
from tests.conftest import CACHE, DEMO_ID, ROOT
from tests.docs_runner import Ctx, lines

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "anthropic.md"
TEXT = DOC.read_text()
BLOCKS = docs.parse(TEXT)
MARKED = [b.name for b in BLOCKS if b.name]

# What Claude Code does with the variables of `claude-env`: the anthropic SDK reads
# ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN by itself, as Claude Code does.
CLAUDE_PROBE = """
python3 - <<'EOF'
import os, anthropic
client = anthropic.Anthropic(max_retries=0)
assert client.api_key is None and client.auth_token, "the key must go as a Bearer token"
for model in (os.environ["ANTHROPIC_MODEL"], os.environ["ANTHROPIC_DEFAULT_HAIKU_MODEL"]):
    message = client.messages.create(
        model=model, max_tokens=12, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    )
    print(message.model, message.content[0].text)
EOF
"""


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture(scope="module")
def ctx(served: srv.Server, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """The page's runner, pointed at the module's server."""
    return docs.page_ctx(BLOCKS, served, tmp_path_factory.mktemp("docs-anthropic"), CACHE / "node")


# --- one check per marked example: what running it must show --------------------------------------


def setup_builds_a_client_that_reaches_the_server(c: Ctx) -> None:
    probe = 'print(client.messages.count_tokens(model="", messages=[{"role": "user", "content": "Hi"}]))'
    assert "input_tokens=" in c.run.run("anth-setup", probe=probe).ok().stdout


def ask_prints_paris_then_the_stop_reason_and_usage(c: Ctx) -> None:
    text, meta = lines(c.run.run("anth-ask").ok())
    assert "Paris" in text
    reason, input_tokens, output_tokens = meta.split()
    assert reason in ("end_turn", "max_tokens")
    assert int(input_tokens) >= 0 and 0 < int(output_tokens) <= 12


def stream_prints_paris_as_it_streams(c: Ctx) -> None:
    assert "Paris" in c.run.run("anth-stream").ok().stdout


def follow_up_answers_with_the_first_turn_read_from_the_cache(c: Ctx) -> None:
    text, cached = lines(c.run.run("anth-follow").ok())
    assert text.strip()
    label, count = cached.split()
    assert label == "cached:" and int(count) > 0


def prefill_goes_on_from_where_the_begun_answer_stops(c: Ctx) -> None:
    [text] = lines(c.run.run("anth-prefill").ok())
    assert text.lstrip().startswith("4"), text  # from 4 on: 1, 2, 3 were given


def count_prints_the_prompts_length_in_tokens(c: Ctx) -> None:
    [count] = lines(c.run.run("anth-count").ok())
    assert int(count) > 10  # the chat template's system and user turns, and the question


def tools_make_a_call_then_answer_from_its_result(c: Ctx) -> None:
    head, args, answer = docs.call_then_answer(c.run.run("anth-tools").ok())
    assert head == "call: get_weather"
    assert set(args) == {"city"} and isinstance(args["city"], str)
    assert answer.startswith("answer: ") and answer[len("answer: ") :].strip()


def curl_key_reads_the_key_file(c: Ctx) -> None:
    out = c.run.run("anth-curl-key", probe='printf "%s" "$KEY"').ok()
    assert out.stdout == c.server.key


def curl_prints_only_the_answer_text(c: Ctx) -> None:
    out = c.run.run("anth-curl").ok()
    assert "Paris" in out.stdout and not out.stdout.lstrip().startswith("{")


def curl_stream_prints_anthropics_named_events_ending_in_message_stop(c: Ctx) -> None:
    out = c.run.run("anth-curl-stream").ok()
    names, events = docs.named_events(out.stdout)
    assert names == [e["type"] for e in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "Paris" in text


def claude_env_points_an_anthropic_client_at_the_server_with_a_bearer_key(c: Ctx) -> None:
    out = c.run.run("claude-env", probe=CLAUDE_PROBE).ok()
    answers = lines(out)
    assert len(answers) == 2 and all(a.startswith(f"{DEMO_ID} ") for a in answers), out.stdout
    assert all("Paris" in a for a in answers)


CHECKS: dict[str, Callable[[Ctx], None]] = {
    "anth-setup": setup_builds_a_client_that_reaches_the_server,
    "anth-ask": ask_prints_paris_then_the_stop_reason_and_usage,
    "anth-stream": stream_prints_paris_as_it_streams,
    "anth-follow": follow_up_answers_with_the_first_turn_read_from_the_cache,
    "anth-prefill": prefill_goes_on_from_where_the_begun_answer_stops,
    "anth-count": count_prints_the_prompts_length_in_tokens,
    "anth-tools": tools_make_a_call_then_answer_from_its_result,
    "anth-curl-key": curl_key_reads_the_key_file,
    "anth-curl": curl_prints_only_the_answer_text,
    "anth-curl-stream": curl_stream_prints_anthropics_named_events_ending_in_message_stop,
    "claude-env": claude_env_points_an_anthropic_client_at_the_server_with_a_bearer_key,
}


# --- the page itself --------------------------------------------------------------------------------


def test_every_code_block_is_marked_as_tested_or_says_why_not() -> None:
    unmarked = [
        f"line {b.line} ({b.lang})"
        for b in BLOCKS
        if b.lang in (*docs.RUNNABLE, "json") and not b.name and not b.not_tested
    ]
    assert not unmarked, f"code blocks with neither a test nor a not-tested marker: {unmarked}"


def test_every_marked_example_has_a_check_and_every_check_an_example() -> None:
    assert len(MARKED) == len(set(MARKED)), f"duplicate example names: {MARKED}"
    assert set(MARKED) == set(CHECKS)
    for b in BLOCKS:
        assert b.after is None or b.after in MARKED, f"line {b.line}: after {b.after!r}"


def test_the_claude_code_settings_file_names_the_same_settings_as_the_shell_block() -> None:
    [settings] = [b for b in BLOCKS if b.lang == "json" and '"env"' in b.code]
    env = json.loads(settings.code)["env"]
    shell = {}
    for line in next(b.code for b in BLOCKS if b.name == "claude-env").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        shell[name] = value.split(" # ")[0].strip().strip('"')
    assert set(env) == set(shell)
    for name, value in env.items():
        if name != "ANTHROPIC_AUTH_TOKEN":  # the file holds the key itself; the shell reads it
            written = shell[name]
            assert value == (env["ANTHROPIC_MODEL"] if written == "$ANTHROPIC_MODEL" else written)


def test_the_page_says_what_a_client_needs() -> None:
    for needle in (
        "http://127.0.0.1:8756",
        "without** `/v1`",
        "x-api-key",
        "Authorization: Bearer",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_MODEL",
        "~/.claude/settings.json",
        "tholos-mlx key",
        "overloaded_error",
        "retry-after",
    ):
        assert needle in TEXT, f"docs/anthropic.md lacks {needle!r}"


# --- running them -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MARKED)
def test_every_marked_example_runs_and_does_what_the_page_says(name: str, ctx: Ctx) -> None:
    CHECKS[name](ctx)
    assert name in ctx.run.ran, f"the check for {name!r} never ran it"
