"""docs/responses.md: every marked example runs against the real server with the demo model."""

from __future__ import annotations

import ast
from collections.abc import Callable

import pytest

from tests import docs_runner as docs
from tests import server as srv
from tests.conftest import CACHE, DEMO_ID, ROOT
from tests.docs_runner import Ctx, lines

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "responses.md"
TEXT = DOC.read_text()
BLOCKS = docs.parse(TEXT)
MARKED = [b.name for b in BLOCKS if b.name]


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture(scope="module")
def ctx(served: srv.Server, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """The page's runner, pointed at the module's server."""
    return docs.page_ctx(BLOCKS, served, tmp_path_factory.mktemp("docs-responses"), CACHE / "node")


# --- one check per marked example: what running it must show --------------------------------------


def setup_builds_a_client_that_reaches_the_server(c: Ctx) -> None:
    out = c.run.run("resp-setup", probe="print([m.id for m in client.models.list().data])").ok()
    assert DEMO_ID in out.stdout


def ask_prints_paris_then_a_stored_completed_response(c: Ctx) -> None:
    text, meta = lines(c.run.run("resp-ask").ok())
    assert "Paris" in text
    resp_id, status, input_tokens, output_tokens = meta.split()
    assert resp_id.startswith("resp_") and status == "completed"
    assert int(input_tokens) > 0 and 0 < int(output_tokens) <= 12
    with c.server.client() as client:
        assert client.get(f"/v1/responses/{resp_id}").json()["status"] == "completed"


def stream_prints_paris_as_it_streams_and_completes(c: Ctx) -> None:
    text, status = lines(c.run.run("resp-stream").ok())
    assert "Paris" in text and status == "completed"


def follow_up_answers_from_the_stored_turn_with_cached_tokens(c: Ctx) -> None:
    text, cached = lines(c.run.run("resp-follow").ok())
    assert text.strip()
    label, count = cached.split()
    assert label == "cached:" and int(count) > 0


def json_schema_prints_an_object_with_the_schemas_fields(c: Ctx) -> None:
    [printed] = lines(c.run.run("resp-json").ok())
    value = ast.literal_eval(printed)  # print() of the parsed JSON: a Python dict
    assert isinstance(value, dict) and set(value) == {"city", "country"}
    assert all(isinstance(v, str) for v in value.values())


def tools_make_a_call_then_answer_from_its_result(c: Ctx) -> None:
    head, args, answer = docs.call_then_answer(c.run.run("resp-tools").ok())
    assert head == "call: get_weather"
    assert set(args) == {"city"} and isinstance(args["city"], str)
    assert answer.startswith("answer: ") and answer[len("answer: ") :].strip()


def curl_key_reads_the_key_file(c: Ctx) -> None:
    out = c.run.run("resp-curl-key", probe='printf "%s" "$KEY"').ok()
    assert out.stdout == c.server.key


def curl_prints_only_the_answer_text(c: Ctx) -> None:
    out = c.run.run("resp-curl").ok()
    assert "Paris" in out.stdout and not out.stdout.lstrip().startswith("{")


def curl_stream_prints_named_events_from_created_to_completed(c: Ctx) -> None:
    out = c.run.run("resp-curl-stream").ok()
    names, events = docs.named_events(out.stdout)
    assert names == [e["type"] for e in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert "Paris" in text


CHECKS: dict[str, Callable[[Ctx], None]] = {
    "resp-setup": setup_builds_a_client_that_reaches_the_server,
    "resp-ask": ask_prints_paris_then_a_stored_completed_response,
    "resp-stream": stream_prints_paris_as_it_streams_and_completes,
    "resp-follow": follow_up_answers_from_the_stored_turn_with_cached_tokens,
    "resp-json": json_schema_prints_an_object_with_the_schemas_fields,
    "resp-tools": tools_make_a_call_then_answer_from_its_result,
    "resp-curl-key": curl_key_reads_the_key_file,
    "resp-curl": curl_prints_only_the_answer_text,
    "resp-curl-stream": curl_stream_prints_named_events_from_created_to_completed,
}


# --- the page itself --------------------------------------------------------------------------------


def test_every_code_block_is_marked_as_tested_or_says_why_not() -> None:
    unmarked = [
        f"line {b.line} ({b.lang})"
        for b in BLOCKS
        if b.lang in docs.RUNNABLE and not b.name and not b.not_tested
    ]
    assert not unmarked, f"runnable blocks with neither a test nor a reason: {unmarked}"
    wrong = [f"line {b.line}: {b.lang!r}" for b in BLOCKS if b.name and b.lang not in docs.RUNNABLE]
    assert not wrong, f"marked to run, but no runner for the language: {wrong}"


def test_every_marked_example_has_a_check_and_every_check_an_example() -> None:
    assert len(MARKED) == len(set(MARKED)), f"duplicate example names: {MARKED}"
    assert set(MARKED) == set(CHECKS)
    for b in BLOCKS:
        assert b.after is None or b.after in MARKED, f"line {b.line}: after {b.after!r}"


def test_the_page_tells_how_to_point_a_responses_client_at_the_server() -> None:
    for needle in (
        "http://127.0.0.1:8756/v1",
        "tholos-mlx key",
        "GET /v1/models",
        "previous_response_id",
        "store=False",
        "function_call_output",
        "text.format",
        "~/.codex/config.toml",
        'wire_api = "responses"',
        'base_url = "http://127.0.0.1:8756/v1"',
        "env_key",
        "OPENAI_BASE_URL",
        "left out of the prompt",
        "429",
        "503",
        "Retry-After",
    ):
        assert needle in TEXT, f"docs/responses.md lacks {needle!r}"
    assert (ROOT / "docs" / "automations.md").read_text().count("## The key") == 1  # the link


# --- running them -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MARKED)
def test_every_marked_example_runs_and_does_what_the_page_says(name: str, ctx: Ctx) -> None:
    CHECKS[name](ctx)
    assert name in ctx.run.ran, f"the check for {name!r} never ran it"


def test_the_examples_left_the_server_healthy_with_an_empty_line(served: srv.Server) -> None:
    with served.client() as c:
        r = c.get("/health")
    assert r.status_code == 200 and r.json()["queue"] == 0
