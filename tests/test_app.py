"""The HTTP app over real HTTP with a fake engine: auth, shapes, errors, boundary, queue."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import (
    WAIT_S,
    FakeEngine,
    LiveServer,
    Script,
    engine_held,
    live_server,
    queue_len,
    wait_for,
)
from tholos_mlx import timings
from tholos_mlx.errors import ContextLengthExceeded, ServiceUnavailable
from tholos_mlx.home import rotate_key

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
BAD_PATTERN = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}
BAD_SCHEMA = {"name": "backref", "schema": BAD_PATTERN}
BAD_TOOL = {"name": "f", "parameters": BAD_PATTERN}
ERROR_KEYS = {"message", "type", "param", "code"}


# -- fixtures and helpers --


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app with a FakeEngine (model `alpha` loaded) on a real port."""
    with live_server(tmp_path / "home") as s:
        yield s


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the tests that only read (auth, Host, the bad-input table), so they also
    show it survives them all; a test that scripts its engine appends to engine.scripts."""
    with live_server(tmp_path_factory.mktemp("home")) as s:
        yield s


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client that sends the right key."""
    with server.client() as c:
        yield c


def chat(**fields: Any) -> dict[str, Any]:
    """A chat request body: one user message plus the given fields."""
    return {**HELLO, **fields}


def error_of(r: httpx.Response, status: int, type_: str, code: str | None) -> dict[str, Any]:
    """Assert OpenAI's error shape, status, type and code; return the error object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    assert err["type"] == type_
    assert err["code"] == code
    return err


def sse(body: str) -> tuple[list[str], list[str]]:
    """The `data:` payloads and `:` comments of an SSE body, checking its framing."""
    assert body.endswith("\n\n"), body[-80:]
    data: list[str] = []
    comments: list[str] = []
    for frame in body[:-2].split("\n\n"):
        for line in frame.split("\n"):
            if line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif line.startswith(":"):
                comments.append(line)
            else:
                raise AssertionError(f"not an SSE line: {line!r}")
    return data, comments


def chunks(data: list[str]) -> list[dict[str, Any]]:
    """Every chunk before [DONE] parsed as JSON; [DONE] must come last, once."""
    assert data[-1] == "[DONE]"
    assert data.count("[DONE]") == 1
    return [json.loads(d) for d in data[:-1]]


def post_in_thread(
    pool: ThreadPoolExecutor, server: LiveServer, body: dict[str, Any], **client_kwargs: Any
) -> Future[httpx.Response]:
    """POST a chat completion from another thread, with its own client."""

    def go() -> httpx.Response:
        with server.client(**client_kwargs) as c:
            return c.post("/v1/chat/completions", json=body)

    return pool.submit(go)


def user_text(job_request: Any) -> str:
    """The last user message of a request the fake received."""
    return str(job_request.messages[-1].content)


def send_chat(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    """POST a chat completion with a client of its own."""
    with server.client() as c:
        return c.post("/v1/chat/completions", json=body)


@contextmanager
def queue_full(tmp_path: Path) -> Iterator[LiveServer]:
    """A server (--max-queue 1) whose engine holds request "1" while "2" waits; on leaving,
    the engine is let go and both must have been answered, in order, the queue empty."""
    bodies = [chat(messages=[{"role": "user", "content": n}]) for n in ("1", "2")]
    with engine_held(tmp_path / "home", send_chat, bodies, max_queue=1) as s:
        yield s
    assert [user_text(r) for r in s.engine.requests] == ["1", "2"]


# -- 1. auth --

ROUTES = [
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/alpha"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/no/such/path"),
    ("GET", "/v1/chat/completions"),  # wrong method
    ("DELETE", "/health"),  # wrong method
]
BAD_AUTH = {
    "missing": {},
    "wrong key": {"Authorization": "Bearer tholos-wrong"},
    "bare bearer": {"Authorization": "Bearer"},
    "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "bytes that are not UTF-8": {"Authorization": b"Bearer \xc3\x28"},  # type: ignore[dict-item]
}


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
def test_every_route_without_the_right_key_gets_401_in_openai_shape(
    shared_server: LiveServer, method: str, path: str, auth: str
) -> None:
    before = len(shared_server.engine.jobs)
    with httpx.Client(base_url=shared_server.url, timeout=WAIT_S, verify=False) as c:
        r = c.request(method, path, headers=BAD_AUTH[auth], json=HELLO)
    error_of(r, 401, "invalid_request_error", "invalid_api_key")
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert shared_server.key not in r.text
    assert len(shared_server.engine.jobs) == before


def test_a_rotated_key_is_accepted_at_once_and_the_old_one_refused(server: LiveServer) -> None:
    old = server.key
    with httpx.Client(base_url=server.url, timeout=WAIT_S, verify=False) as c:
        assert c.get("/health", headers={"Authorization": f"Bearer {old}"}).status_code == 200
        new = rotate_key(server.home)
        assert new != old
        r = c.get("/health", headers={"Authorization": f"Bearer {old}"})
        error_of(r, 401, "invalid_request_error", "invalid_api_key")
        assert c.get("/health", headers={"Authorization": f"Bearer {new}"}).status_code == 200


# -- 2. /health and /v1/models --


def test_head_of_the_root_answers_200_without_a_body_as_claude_code_checks_it(
    shared_server: LiveServer,
) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=WAIT_S) as c:
        r = c.head("/", headers={"x-api-key": shared_server.key})
        assert r.status_code == 200 and r.content == b""
        assert c.head("/", headers={"x-api-key": "sk-wrong"}).status_code == 401


def test_health_reports_status_loaded_model_and_queue(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "status": "ok",
        "model": "alpha",
        "last_model": "alpha",
        "queue": 0,
        "speculative": "ngram",
    }


def test_health_reports_no_model_as_null(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", FakeEngine(loaded=None)) as s, s.client() as c:
        assert c.get("/health").json() == {
            "status": "ok",
            "model": None,
            "last_model": None,
            "queue": 0,
            "speculative": "ngram",
        }


def test_models_lists_every_installed_model_in_openai_shape(
    server: LiveServer, client: httpx.Client
) -> None:
    unassigned = server.home / "models" / "delta"
    unassigned.mkdir()
    (unassigned / "config.json").write_text("{}")
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"object", "data"}
    assert body["object"] == "list"
    for m in body["data"]:
        assert set(m) == {"id", "object", "created", "owned_by", "tier", "loaded"}
        assert m["object"] == "model"
        assert isinstance(m["created"], int) and not isinstance(m["created"], bool)
        assert m["created"] > 0
        assert m["owned_by"] == "tholos"
    got = {m["id"]: (m["tier"], m["loaded"]) for m in body["data"]}
    assert got == {
        "alpha": ("fast", True),
        "beta": ("fast", False),
        "gamma": ("big", False),
        "delta": ("unassigned", False),
    }


def test_one_model_is_answered_by_id_and_an_unknown_one_is_404(client: httpx.Client) -> None:
    r = client.get("/v1/models/gamma")
    assert r.status_code == 200
    m = r.json()
    assert m["id"] == "gamma" and m["object"] == "model" and m["tier"] == "big"
    assert m["loaded"] is False
    err = error_of(client.get("/v1/models/nope"), 404, "invalid_request_error", "model_not_found")
    assert err["param"] == "model"


# -- 3. chat completions: JSON and SSE shapes --

PIECES = ("Bonjour", ", ", "ça va", " ? ", "🎉", "\n", 'a "quote" \\ ok')


def test_a_non_streamed_completion_has_exactly_openais_shape(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(pieces=PIECES, prompt_tokens=11, cached_tokens=4)
    before = int(time.time())
    r = client.post("/v1/chat/completions", json=chat(model="beta"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
    }
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and before - 1 <= body["created"] <= time.time() + 1
    assert body["model"] == "beta"  # the id that served it, not what was asked
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "".join(PIECES)
    assert body["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": len(PIECES),
        "total_tokens": 11 + len(PIECES),
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    (job,) = server.engine.jobs
    assert job.entry is not None and job.entry.id == "beta"
    assert job.request.messages[0].content == "Hello"
    assert not job.cancelled


def test_completion_ids_differ_between_requests(client: httpx.Client) -> None:
    ids = {client.post("/v1/chat/completions", json=HELLO).json()["id"] for _ in range(3)}
    assert len(ids) == 3


def test_finish_reason_length_is_passed_through(server: LiveServer, client: httpx.Client) -> None:
    server.engine.script = Script(pieces=("a", "b"), finish_reason="length")
    body = client.post("/v1/chat/completions", json=chat(max_tokens=2)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert server.engine.requests[0].max_tokens == 2


def test_a_streamed_completion_has_openais_chunks_then_usage_then_done(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(pieces=PIECES, delay=0.005, prompt_tokens=11, cached_tokens=4)
    body = chat(stream=True, stream_options={"include_usage": True})
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data, comments = sse(r.text)
    assert comments == []
    parsed = chunks(data)
    ids = {c["id"] for c in parsed}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for c in parsed:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == "alpha"
        assert isinstance(c["created"], int)
        assert "usage" in c
    *choice_chunks, usage_chunk = parsed
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": len(PIECES),
        "total_tokens": 11 + len(PIECES),
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    for c in choice_chunks:
        assert len(c["choices"]) == 1 and c["choices"][0]["index"] == 0
        assert c["usage"] is None
    assert choice_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in choice_chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in choice_chunks)
    assert text == "".join(PIECES)


def test_streamed_text_concatenated_equals_the_non_streamed_text(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(pieces=PIECES, delay=0.003)
    plain = client.post("/v1/chat/completions", json=HELLO).json()
    streamed = client.post("/v1/chat/completions", json=chat(stream=True))
    parsed = chunks(sse(streamed.text)[0])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed)
    assert text == plain["choices"][0]["message"]["content"] == "".join(PIECES)


def test_a_stream_without_include_usage_has_no_usage_chunk(
    server: LiveServer, client: httpx.Client
) -> None:
    r = client.post("/v1/chat/completions", json=chat(stream=True))
    parsed = chunks(sse(r.text)[0])
    assert all("usage" not in c for c in parsed)
    assert all(len(c["choices"]) == 1 for c in parsed)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


def test_text_part_content_and_sampling_fields_reach_the_engine(
    server: LiveServer, client: httpx.Client
) -> None:
    body = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            },
        ],
        "temperature": 0,
        "top_p": 0.5,
        "max_completion_tokens": 9,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "user": "ignored",
    }
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    (req,) = server.engine.requests
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be brief."),
        ("user", "Hello"),
    ]
    assert (req.temperature, req.top_p, req.max_tokens, req.stop, req.seed) == (
        0.0,
        0.5,
        9,
        ("\n\n", "END"),
        42,
    )


# -- 4. bad input, table-driven, on one server that must survive it all --

BIG = b'{"messages": [{"role": "user", "content": "' + b"x" * (4 * 1024 * 1024) + b'"}]}'

# id, method, path, body (dict/list -> JSON, bytes raw), status, type, code, param
BAD_INPUT: list[tuple[str, str, str, Any, int, str, str | None, str | None]] = [
    (
        "malformed json",
        "POST",
        "/v1/chat/completions",
        b'{"messages": [',
        400,
        "invalid_request_error",
        None,
        None,
    ),
    (
        "body is an array",
        "POST",
        "/v1/chat/completions",
        [HELLO],
        400,
        "invalid_request_error",
        None,
        None,
    ),
    (
        "body is a string",
        "POST",
        "/v1/chat/completions",
        "hi",
        400,
        "invalid_request_error",
        None,
        None,
    ),
    ("empty body", "POST", "/v1/chat/completions", b"", 400, "invalid_request_error", None, None),
    (
        "messages missing",
        "POST",
        "/v1/chat/completions",
        {"model": "alpha"},
        400,
        "invalid_request_error",
        None,
        "messages",
    ),
    (
        "messages empty",
        "POST",
        "/v1/chat/completions",
        {"messages": []},
        400,
        "invalid_request_error",
        None,
        "messages",
    ),
    (
        "messages not a list",
        "POST",
        "/v1/chat/completions",
        {"messages": "hi"},
        400,
        "invalid_request_error",
        None,
        "messages",
    ),
    (
        "message not an object",
        "POST",
        "/v1/chat/completions",
        {"messages": ["hi"]},
        400,
        "invalid_request_error",
        None,
        "messages[0]",
    ),
    (
        "unknown role",
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "wizard", "content": "hi"}]},
        400,
        "invalid_request_error",
        None,
        "messages[0].role",
    ),
    (
        "content a number",
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": 5}]},
        400,
        "invalid_request_error",
        None,
        "messages[0].content",
    ),
    (
        "content an image part",
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "invalid_request_error",
        "unsupported_parameter",
        "messages[0].content[0].type",
    ),
    (
        "temperature 3",
        "POST",
        "/v1/chat/completions",
        chat(temperature=3),
        400,
        "invalid_request_error",
        None,
        "temperature",
    ),
    (
        "temperature a string",
        "POST",
        "/v1/chat/completions",
        chat(temperature="hot"),
        400,
        "invalid_request_error",
        None,
        "temperature",
    ),
    (
        "top_p 0",
        "POST",
        "/v1/chat/completions",
        chat(top_p=0),
        400,
        "invalid_request_error",
        None,
        "top_p",
    ),
    (
        "max_tokens 0",
        "POST",
        "/v1/chat/completions",
        chat(max_tokens=0),
        400,
        "invalid_request_error",
        None,
        "max_tokens",
    ),
    (
        "max_tokens a string",
        "POST",
        "/v1/chat/completions",
        chat(max_tokens="5"),
        400,
        "invalid_request_error",
        None,
        "max_tokens",
    ),
    (
        "max_tokens a float",
        "POST",
        "/v1/chat/completions",
        chat(max_tokens=5.5),
        400,
        "invalid_request_error",
        None,
        "max_tokens",
    ),
    (
        "five stop strings",
        "POST",
        "/v1/chat/completions",
        chat(stop=list("abcde")),
        400,
        "invalid_request_error",
        None,
        "stop",
    ),
    (
        "n 2",
        "POST",
        "/v1/chat/completions",
        chat(n=2),
        400,
        "invalid_request_error",
        "unsupported_parameter",
        "n",
    ),
    (
        "logprobs true",
        "POST",
        "/v1/chat/completions",
        chat(logprobs=True),
        400,
        "invalid_request_error",
        "unsupported_parameter",
        "logprobs",
    ),
    (
        "unknown response_format type",
        "POST",
        "/v1/chat/completions",
        chat(response_format={"type": "xml"}),
        400,
        "invalid_request_error",
        None,
        "response_format",
    ),
    (
        "json_schema without its name",
        "POST",
        "/v1/chat/completions",
        chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        400,
        "invalid_request_error",
        None,
        "response_format.json_schema.name",
    ),
    (
        "an assistant refusal part from a user",
        "POST",
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]),
        400,
        "invalid_request_error",
        "unsupported_parameter",
        "messages[0].content[0].type",
    ),
    (
        "stream a string",
        "POST",
        "/v1/chat/completions",
        chat(stream="yes"),
        400,
        "invalid_request_error",
        None,
        "stream",
    ),
    (
        "prompt longer than the context",
        "POST",
        "/v1/chat/completions",
        HELLO,
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    ),
    (
        "body over 4 MiB",
        "POST",
        "/v1/chat/completions",
        BIG,
        413,
        "invalid_request_error",
        "request_too_large",
        None,
    ),
    (
        "GET on chat completions",
        "GET",
        "/v1/chat/completions",
        None,
        405,
        "invalid_request_error",
        "method_not_allowed",
        None,
    ),
    (
        "POST on models",
        "POST",
        "/v1/models",
        HELLO,
        405,
        "invalid_request_error",
        "method_not_allowed",
        None,
    ),
    (
        "unknown path",
        "GET",
        "/v1/nothing-here",
        None,
        404,
        "invalid_request_error",
        "not_found",
        None,
    ),
    (
        "completions path of the old API",
        "POST",
        "/v1/completions",
        {"prompt": "hi"},
        404,
        "invalid_request_error",
        "not_found",
        None,
    ),
    (
        "unknown model",
        "POST",
        "/v1/chat/completions",
        chat(model="nope"),
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    ),
]


@pytest.mark.parametrize(
    "method,path,body,status,type_,code,param",
    [row[1:] for row in BAD_INPUT],
    ids=[row[0] for row in BAD_INPUT],
)
def test_bad_input_gets_a_4xx_in_openai_shape_naming_the_param(
    shared_server: LiveServer,
    method: str,
    path: str,
    body: Any,
    status: int,
    type_: str,
    code: str | None,
    param: str | None,
) -> None:
    engine = shared_server.engine
    if code == "context_length_exceeded":
        engine.scripts.append(
            Script(
                error_before_start=ContextLengthExceeded(
                    "This model's maximum context length is 8 tokens; your messages take 9.",
                    param="messages",
                )
            )
        )
    before = len(engine.jobs)
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    with shared_server.client() as c:  # a fresh connection: a 413 may close it
        r = c.request(method, path, **kwargs)
    err = error_of(r, status, type_, code)
    assert err["param"] == param
    if code != "context_length_exceeded":
        assert len(engine.jobs) == before  # refused at the edge, the engine never saw it
    if status == 405:
        assert r.headers.get("Allow")


def test_after_the_bad_input_table_the_server_still_answers(shared_server: LiveServer) -> None:
    with shared_server.client() as c:
        r = c.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "model": "alpha",
            "last_model": "alpha",
            "queue": 0,
            "speculative": "ngram",
        }
        assert c.post("/v1/chat/completions", json=HELLO).status_code == 200


def test_an_unexpected_engine_error_is_a_500_without_internals(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(error_before_start=RuntimeError("secret /Users/me/weights"))
    err = error_of(
        client.post("/v1/chat/completions", json=HELLO), 500, "server_error", "internal_error"
    )
    assert "secret" not in err["message"]
    assert client.get("/health").status_code == 200


# -- 5. the localhost boundary: Host header and CORS --


@pytest.mark.parametrize(
    "host",
    [
        "evil.com:{port}",
        "evil.com",
        "127.0.0.1:1",
        "127.0.0.1",
        "localhost.evil.com:{port}",
        "0.0.0.0:{port}",
    ],
)
def test_a_foreign_host_header_gets_403_even_with_the_right_key(
    shared_server: LiveServer, host: str
) -> None:
    port = shared_server.port
    before = len(shared_server.engine.jobs)
    with shared_server.client() as client:
        for method, path in [
            ("GET", "/health"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/no/such/path"),
            ("GET", "/v1/chat/completions"),
        ]:
            r = client.request(method, path, json=HELLO, headers={"Host": host.format(port=port)})
            err = error_of(r, 403, "invalid_request_error", "forbidden_host")
            assert str(port) in err["message"]
        # The Host check comes before the key: a rebinding page learns nothing about it.
        r = client.get("/health", headers={"Host": host.format(port=port), "Authorization": ""})
        error_of(r, 403, "invalid_request_error", "forbidden_host")
    assert len(shared_server.engine.jobs) == before


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "LocalHost:{port}"]
)
def test_loopback_host_headers_are_served(shared_server: LiveServer, host: str) -> None:
    with shared_server.client() as client:
        r = client.get("/health", headers={"Host": host.format(port=shared_server.port)})
    assert r.status_code == 200, r.text


def test_no_cors_headers_are_sent_by_default(server: LiveServer, client: httpx.Client) -> None:
    origin = {"Origin": "http://x.test"}
    responses = [
        client.get("/health", headers=origin),
        client.post("/v1/chat/completions", json=HELLO, headers=origin),
        client.options(
            "/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"}
        ),
    ]
    for r in responses:
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers


def test_an_allowed_origin_gets_cors_headers_and_a_working_preflight(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", allow_origins=("http://x.test",)) as s:
        with httpx.Client(base_url=s.url, timeout=WAIT_S, verify=False) as anon:
            pre = anon.options(
                "/v1/chat/completions",
                headers={
                    "Origin": "http://x.test",
                    "Access-Control-Request-Method": "POST",
                    # The OpenAI JS SDK in a browser sends its X-Stainless-* headers too.
                    "Access-Control-Request-Headers": "authorization, content-type, "
                    "x-stainless-lang, x-stainless-retry-count",
                },
            )
        assert pre.status_code in (200, 204), pre.text
        assert "x-stainless-retry-count" in pre.headers["Access-Control-Allow-Headers"].lower()
        assert pre.headers["Access-Control-Allow-Origin"] == "http://x.test"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        with s.client() as c:
            r = c.post("/v1/chat/completions", json=HELLO, headers={"Origin": "http://x.test"})
            assert r.status_code == 200
            assert r.headers["Access-Control-Allow-Origin"] == "http://x.test"
            r = c.post(
                "/v1/chat/completions", json=chat(stream=True), headers={"Origin": "http://x.test"}
            )
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["Access-Control-Allow-Origin"] == "http://x.test"
            # An error answer carries it too, so the page can read why.
            r = c.post("/v1/chat/completions", json=chat(n=2), headers={"Origin": "http://x.test"})
            assert r.status_code == 400
            assert r.headers["Access-Control-Allow-Origin"] == "http://x.test"
            for r in [
                c.get("/health", headers={"Origin": "http://other.test"}),
                c.options(
                    "/v1/chat/completions",
                    headers={
                        "Origin": "http://other.test",
                        "Access-Control-Request-Method": "POST",
                    },
                ),
            ]:
                assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        assert len(s.engine.jobs) == 2  # the n=2 request was refused before the engine


# -- 6. which model serves --


def test_nothing_loaded_and_no_model_named_is_503(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", FakeEngine(loaded=None)) as s, s.client() as c:
        for body in (HELLO, chat(model=""), chat(model=None)):
            err = error_of(
                c.post("/v1/chat/completions", json=body),
                503,
                "service_unavailable",
                "model_not_loaded",
            )
            assert "/v1/models" in err["message"]
        r = c.post("/v1/chat/completions", json=HELLO)
        assert r.headers["x-should-retry"] == "false"  # the SDKs' retries could not help
        assert int(r.headers["Retry-After"]) >= 1  # every 503 still says when to come back
        assert s.engine.jobs == []


def test_an_empty_model_means_the_loaded_one(server: LiveServer, client: httpx.Client) -> None:
    body = client.post("/v1/chat/completions", json=chat(model="")).json()
    assert body["model"] == "alpha"
    assert server.engine.entries == [None]


def test_a_tier_name_resolves_to_its_first_model(server: LiveServer, client: httpx.Client) -> None:
    assert client.post("/v1/chat/completions", json=chat(model="fast")).json()["model"] == "alpha"
    assert client.post("/v1/chat/completions", json=chat(model="big")).json()["model"] == "gamma"
    assert client.post("/v1/chat/completions", json=chat(model="beta")).json()["model"] == "beta"
    assert [e.id if e else None for e in server.engine.entries] == ["alpha", "gamma", "beta"]
    assert client.get("/health").json()["model"] == "beta"


def test_after_idle_unload_a_request_naming_no_model_goes_to_the_engine(tmp_path: Path) -> None:
    with live_server(tmp_path / "home") as s, s.client() as c:
        s.engine.unload()
        health = c.get("/health").json()
        assert (health["model"], health["last_model"]) == (None, "alpha")
        count = c.post("/v1/messages/count_tokens", json={"messages": HELLO["messages"]})
        assert count.status_code == 200, count.text  # counted with the last model, not a 503
        r = c.post("/v1/chat/completions", json=HELLO)
        assert r.status_code == 200, r.text  # not the 503 of a server that never had a model
        assert r.json()["model"] == "alpha"
        assert s.engine.entries == [None]  # the engine reloads the last model itself
        health = c.get("/health").json()
        assert (health["model"], health["last_model"]) == ("alpha", "alpha")


def test_a_named_model_loads_even_when_nothing_is(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", FakeEngine(loaded=None)) as s, s.client() as c:
        assert c.post("/v1/chat/completions", json=chat(model="gamma")).json()["model"] == "gamma"


# -- 7. Accept: text/plain --


def test_accept_text_plain_returns_only_the_text(server: LiveServer, client: httpx.Client) -> None:
    server.engine.script = Script(pieces=PIECES)
    r = client.post("/v1/chat/completions", json=HELLO, headers={"Accept": "text/plain"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.content.decode("utf-8") == "".join(PIECES)


def test_errors_stay_json_when_text_plain_is_accepted(
    server: LiveServer, client: httpx.Client
) -> None:
    plain = {"Accept": "text/plain"}
    err = error_of(
        client.post("/v1/chat/completions", json=chat(temperature=3), headers=plain),
        400,
        "invalid_request_error",
        None,
    )
    assert err["param"] == "temperature"
    server.engine.script = Script(
        error_before_start=ContextLengthExceeded("too long", param="messages")
    )
    error_of(
        client.post("/v1/chat/completions", json=HELLO, headers=plain),
        400,
        "invalid_request_error",
        "context_length_exceeded",
    )
    error_of(
        client.get("/health", headers={**plain, "Authorization": "Bearer nope"}),
        401,
        "invalid_request_error",
        "invalid_api_key",
    )


def test_a_stream_ignores_accept_text_plain(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions", json=chat(stream=True), headers={"Accept": "text/plain"}
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks(sse(r.text)[0])


# -- 8. errors after streaming started --


@pytest.mark.parametrize(
    "error,type_,secret",
    [
        (ServiceUnavailable("The generation was stopped."), "service_unavailable", None),
        (RuntimeError("secret internals"), "server_error", "secret"),
    ],
)
def test_an_error_after_streaming_started_is_one_error_event_and_no_done(
    server: LiveServer,
    client: httpx.Client,
    error: BaseException,
    type_: str,
    secret: str | None,
) -> None:
    server.engine.script = Script(
        pieces=("one", "two", "three"), error_after=2, error=error, delay=0.005
    )
    r = client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200
    data, _ = sse(r.text)
    assert "[DONE]" not in data
    parsed = [json.loads(d) for d in data]
    *content, last = parsed
    assert set(last) == {"error"}
    assert set(last["error"]) == ERROR_KEYS
    assert last["error"]["type"] == type_
    assert all("error" not in c for c in content)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == "onetwo"
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    if secret:
        assert secret not in r.text
    assert client.get("/health").json()["queue"] == 0


def test_an_error_before_streaming_started_is_a_plain_json_error(
    server: LiveServer, client: httpx.Client
) -> None:
    server.engine.script = Script(
        error_before_start=ContextLengthExceeded("too long", param="messages")
    )
    r = client.post("/v1/chat/completions", json=chat(stream=True))
    error_of(r, 400, "invalid_request_error", "context_length_exceeded")


# -- 9. the queue through HTTP --


def test_a_full_queue_answers_429_with_retry_after_at_once(tmp_path: Path) -> None:
    with queue_full(tmp_path) as s, s.client() as c:
        t0 = time.monotonic()
        r = c.post("/v1/chat/completions", json=HELLO)
        took = time.monotonic() - t0
        err = error_of(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert "busy" in err["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert took < WAIT_S / 2  # at once, not after a wait (generous bound)
        # /health and /v1/models answer while the engine is busy
        assert c.get("/health").json() == {
            "status": "ok",
            "model": "alpha",
            "last_model": "alpha",
            "queue": 1,
            "speculative": "ngram",
        }
        assert c.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "field, param",
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": BAD_SCHEMA}},
            "response_format",
        ),
        (
            {"tools": [{"type": "function", "function": BAD_TOOL}], "tool_choice": "auto"},
            "tools[0].function.parameters",
        ),
    ],
)
def test_a_schema_that_cannot_constrain_is_a_400_at_once_even_with_the_queue_full(
    tmp_path: Path, field: dict[str, Any], param: str
) -> None:
    with queue_full(tmp_path) as s, s.client() as c:
        r = c.post("/v1/chat/completions", json={**HELLO, **field})
        err = error_of(r, 400, "invalid_request_error", None)  # not 429: never queued
        assert err["param"] == param and "backreference" in err["message"]


def test_a_request_that_waits_past_the_queue_timeout_gets_503_with_retry_after(
    tmp_path: Path,
) -> None:
    hold = threading.Event()
    with (
        live_server(tmp_path / "home", FakeEngine(Script(hold=hold)), queue_timeout=1.0) as s,
        ThreadPoolExecutor(2) as pool,
    ):
        try:
            first = post_in_thread(pool, s, chat(stream=True))
            s.engine.wait_jobs(1)[0].started.wait(WAIT_S)
            with s.client() as c:
                t0 = time.monotonic()
                r = c.post("/v1/chat/completions", json=chat(stream=True))
                took = time.monotonic() - t0
            err = error_of(r, 503, "service_unavailable", "service_unavailable")
            assert "1 s" in err["message"]
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert "x-should-retry" not in r.headers  # waiting again may well work
            assert 0.5 <= took < WAIT_S
        finally:
            hold.set()
        assert first.result(WAIT_S).status_code == 200
        assert len(s.engine.jobs) == 1  # the refused one never reached the engine
        assert queue_len(s) == 0


def test_requests_get_the_engine_in_arrival_order(tmp_path: Path) -> None:
    hold = threading.Event()
    with (
        live_server(tmp_path / "home", FakeEngine(Script(hold=hold))) as s,
        ThreadPoolExecutor(6) as pool,
    ):
        futures = []
        try:
            for i in range(6):
                body = chat(messages=[{"role": "user", "content": str(i)}], stream=i % 2 == 1)
                futures.append(post_in_thread(pool, s, body))
                if i == 0:
                    s.engine.wait_jobs(1)[0].started.wait(WAIT_S)
                else:
                    wait_for(lambda i=i: queue_len(s) == i, f"request {i} to wait")
        finally:
            hold.set()
        for f in futures:
            assert f.result(WAIT_S).status_code == 200
        assert [user_text(r) for r in s.engine.requests] == [str(i) for i in range(6)]
        assert queue_len(s) == 0


def test_a_client_that_disconnects_mid_stream_stops_its_generation_and_frees_the_engine(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    # The first would take 30 s if nobody stopped it; the second is quick.
    engine.scripts = [Script(pieces=("tok ",) * 3000, delay=0.01), Script(pieces=("next",))]
    with live_server(tmp_path / "home", engine) as s, ThreadPoolExecutor(2) as pool:
        with s.client() as c, c.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as r:
            assert r.status_code == 200
            lines = (line for line in r.iter_lines() if '"content":"tok ' in line)
            next(lines)
            second = post_in_thread(pool, s, HELLO)
            wait_for(lambda: queue_len(s) == 1, "the second request to wait")
            next(lines)  # still streaming
            assert not engine.jobs[0].cancelled
        # The stream is closed: the engine must notice and hand over to the second request.
        answer = second.result(WAIT_S)
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "next"
        first, _ = engine.wait_jobs(2)
        assert first.done.wait(WAIT_S)
        assert first.cancelled
        assert first.pieces_sent < 3000
        assert queue_len(s) == 0


def test_a_client_that_disconnects_while_waiting_leaves_the_line(tmp_path: Path) -> None:
    hold = threading.Event()
    with (
        live_server(tmp_path / "home", FakeEngine(Script(hold=hold))) as s,
        ThreadPoolExecutor(2) as pool,
    ):
        try:
            first = post_in_thread(pool, s, HELLO)
            s.engine.wait_jobs(1)[0].started.wait(WAIT_S)
            impatient = post_in_thread(pool, s, HELLO, timeout=0.3)
            with pytest.raises(httpx.ReadTimeout):
                impatient.result(WAIT_S)
            wait_for(lambda: queue_len(s) == 0, "the impatient request to leave the line")
        finally:
            hold.set()
        assert first.result(WAIT_S).status_code == 200
        with s.client() as c:
            assert c.post("/v1/chat/completions", json=HELLO).status_code == 200
        assert len(s.engine.jobs) == 2  # the one that left never reached the engine
        assert queue_len(s) == 0


def test_a_client_that_disconnects_from_a_non_streamed_answer_stops_it(tmp_path: Path) -> None:
    hold = threading.Event()
    engine = FakeEngine()
    engine.scripts = [Script(hold=hold)]
    with live_server(tmp_path / "home", engine) as s, ThreadPoolExecutor(1) as pool:
        impatient = post_in_thread(pool, s, HELLO, timeout=0.3)
        with pytest.raises(httpx.ReadTimeout):
            impatient.result(WAIT_S)
        first = engine.wait_jobs(1)[0]
        assert first.done.wait(WAIT_S)  # stopped without hold ever being set
        assert first.cancelled
        with s.client() as c:
            r = c.post("/v1/chat/completions", json=HELLO)
            assert r.status_code == 200
            assert c.get("/health").json()["queue"] == 0


def test_the_time_a_request_waits_in_line_is_queue_time_not_http_time(tmp_path: Path) -> None:
    bodies = [chat(messages=[{"role": "user", "content": n}]) for n in ("1", "2")]
    with engine_held(tmp_path / "home", send_chat, bodies) as s:
        waiting = timings.now()  # request 2 is in line now
    second = s.engine.jobs[1].times
    assert second.arrived is not None
    assert second.arrived <= second.queued < waiting < second.started
    http_ms, queue_ms = (second.figures()[k] for k in ("http_ms", "queue_ms"))
    assert http_ms is not None and queue_ms is not None
    assert http_ms < (waiting - second.arrived) * 1e3 < queue_ms + http_ms


# -- 10. SSE keepalive --


def test_a_slow_first_token_is_preceded_by_keepalive_comments(tmp_path: Path) -> None:
    with live_server(tmp_path, keepalive_s=0.2) as server, server.client() as client:
        server.engine.script = Script(pieces=("late",), delay=0.5)
        r = client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200
    data, comments = sse(r.text)
    assert ": keepalive" in comments
    assert r.text.index(": keepalive") < r.text.index('"content":"late"')
    parsed = chunks(data)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed) == "late"


def test_a_preflight_addressed_to_a_foreign_host_is_refused(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", allow_origins=("http://x.test",)) as s:
        with httpx.Client(base_url=s.url, timeout=WAIT_S) as anon:
            pre = anon.options(
                "/v1/chat/completions",
                headers={
                    "Origin": "http://x.test",
                    "Access-Control-Request-Method": "POST",
                    "Host": "evil.test:8756",
                },
            )
    assert pre.status_code == 403


def test_either_key_header_may_carry_the_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as anon:
        both = anon.get(
            "/health", headers={"Authorization": "Bearer wrong", "x-api-key": server.key}
        )
        only_api_key = anon.get("/health", headers={"x-api-key": server.key})
        neither = anon.get("/health", headers={"Authorization": "Bearer wrong", "x-api-key": "no"})
    assert (both.status_code, only_api_key.status_code, neither.status_code) == (200, 200, 401)


def test_a_stream_that_can_only_be_calls_opens_with_null_content(
    server: LiveServer, client: httpx.Client
) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    forced = client.post(
        "/v1/chat/completions", json=chat(stream=True, tools=[tool], tool_choice="required")
    )
    free = client.post("/v1/chat/completions", json=chat(stream=True, tools=[tool]))
    assert chunks(sse(forced.text)[0])[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
    }
    assert chunks(sse(free.text)[0])[0]["choices"][0]["delta"]["content"] == ""
