"""End to end: the real `tholos-mlx serve` with the real demo model, over HTTP and the OpenAI SDK."""

from __future__ import annotations

import json
import socket
import uuid

import httpx
import openai
import pytest

from tests import server as srv
from tests.conftest import DEMO_ID
from tholos_mlx import timings

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def served(demo_server: srv.Server) -> srv.Server:
    """The session's demo server (tests/conftest.py), shared with the other modules that read it."""
    return demo_server


@pytest.fixture
def sdk(served: srv.Server) -> openai.OpenAI:
    """The official OpenAI client pointed at the server."""
    return openai.OpenAI(base_url=served.v1, api_key=served.key, max_retries=0, timeout=120)


def sse_events(body: str) -> list[str]:
    """The data payloads of an SSE body, in order (comments dropped)."""
    return [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]


def test_health_reports_the_loaded_model_and_an_empty_queue(served: srv.Server) -> None:
    with served.client() as c:
        r = c.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "model": DEMO_ID,
        "last_model": DEMO_ID,
        "queue": 0,
        "speculative": "ngram",  # the default mode (issue 20)
    }


def test_models_lists_the_demo_model_with_its_tier_and_loaded_flag(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    ids = {m.id: m for m in models.data}
    assert DEMO_ID in ids
    entry = ids[DEMO_ID].model_dump()
    assert entry["object"] == "model" and entry["owned_by"] == "tholos"
    assert entry["tier"] == "fast" and entry["loaded"] is True
    assert isinstance(entry["created"], int)


def test_the_openai_sdk_gets_paris_with_openai_shaped_usage(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(model="", messages=FRANCE, temperature=0, max_tokens=12)
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == DEMO_ID
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in (choice.message.content or "")
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streamed_text_equals_the_non_streamed_text_and_usage_comes_last(
    sdk: openai.OpenAI,
) -> None:
    whole = sdk.chat.completions.create(
        model=DEMO_ID, messages=FRANCE, temperature=0, max_tokens=12
    )
    chunks = list(
        sdk.chat.completions.create(
            model="fast",
            messages=FRANCE,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0] is chunks[-2]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")


def test_a_raw_stream_has_sse_headers_chunk_objects_and_ends_with_done(served: srv.Server) -> None:
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 4, "stream": True}
    with served.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert all("usage" not in ch for ch in chunks)  # only with include_usage
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_stop_string_never_reaches_the_client_even_mid_token(served: srv.Server) -> None:
    # "aris" is not a token of its own: stop strings are matched on decoded text.
    plain = served.chat(FRANCE, max_tokens=12, stop=["aris"]).json()
    text = plain["choices"][0]["message"]["content"]
    assert "aris" not in text and text.endswith("P")
    assert plain["choices"][0]["finish_reason"] == "stop"
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 12, "stop": "aris", "stream": True}
    with served.client() as c:
        events = sse_events(c.post("/v1/chat/completions", json=body).text)
    streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == text


def test_the_same_seed_gives_the_same_sampled_text(served: srv.Server) -> None:
    ask = [{"role": "user", "content": "Name a color."}]
    first = served.chat(ask, temperature=1.0, seed=1234, max_tokens=6).json()
    second = served.chat(ask, temperature=1.0, seed=1234, max_tokens=6).json()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_max_tokens_caps_the_answer_with_finish_reason_length(served: srv.Server) -> None:
    r = served.chat(FRANCE, max_tokens=2).json()
    assert r["usage"]["completion_tokens"] == 2
    assert r["choices"][0]["finish_reason"] == "length"


def test_streamed_unicode_is_never_split_inside_a_character(served: srv.Server) -> None:
    ask = [{"role": "user", "content": "Repeat exactly: 日本語 café 😀 naïve"}]
    whole = served.chat(ask, max_tokens=14).json()["choices"][0]["message"]["content"]
    body = {"messages": ask, "temperature": 0, "max_tokens": 14, "stream": True}
    with served.client() as c:
        events = sse_events(c.post("/v1/chat/completions", json=body).text)
    pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == whole


# Greedy, the demo model answers this with a quote and a row of 🎉, each emoji three tokens.
EMOJI = [{"role": "user", "content": "Write one short line with emoji for a birthday card."}]


def test_max_tokens_inside_an_emoji_drops_the_cut_character_and_never_sends_u_fffd(
    served: srv.Server,
) -> None:
    texts = {}
    for limit in (28, 29, 30):
        r = served.chat(EMOJI, max_tokens=limit)
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert r.json()["usage"]["completion_tokens"] == limit
        texts[limit] = choice["message"]["content"]
        assert "\ufffd" not in texts[limit]
    assert "🎉" in texts[28]
    # 29 and 30 tokens end one and two bytes into the next emoji: its bytes are dropped.
    assert texts[29] == texts[28] and texts[30] == texts[28]
    body = {"messages": EMOJI, "temperature": 0, "max_tokens": 30, "stream": True}
    with served.client() as c:
        events = sse_events(c.post("/v1/chat/completions", json=body).text)
    chunks = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == texts[30]


def test_accept_text_plain_returns_only_the_answer_text(served: srv.Server) -> None:
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 12}
    with served.client() as c:
        r = c.post("/v1/chat/completions", json=body, headers={"Accept": "text/plain"})
        bad = c.post(
            "/v1/chat/completions", json={"messages": []}, headers={"Accept": "text/plain"}
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Paris" in r.text and not r.text.lstrip().startswith("{")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


def test_the_sdk_raises_its_own_error_classes(served: srv.Server, sdk: openai.OpenAI) -> None:
    wrong = openai.OpenAI(base_url=served.v1, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.models.list()
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-model", messages=FRANCE)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="", messages=FRANCE, temperature=5)
    assert bad.value.param == "temperature"


LONG = "hello " * 9000  # more tokens than the model's 8192-token context
BAD_INPUT = [
    ("malformed JSON", b'{"messages": [', 400, None, None),
    ("body not an object", b"[1, 2]", 400, None, None),
    ("messages missing", b"{}", 400, "messages", None),
    ("messages empty", b'{"messages": []}', 400, "messages", None),
    ("messages not a list", b'{"messages": "hi"}', 400, "messages", None),
    (
        "unknown role",
        b'{"messages": [{"role": "wizard", "content": "x"}]}',
        400,
        "messages[0].role",
        None,
    ),
    (
        "content a number",
        b'{"messages": [{"role": "user", "content": 5}]}',
        400,
        "messages[0].content",
        None,
    ),
    (
        "temperature above 2",
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}',
        400,
        "temperature",
        None,
    ),
    (
        "top_p zero",
        b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0}',
        400,
        "top_p",
        None,
    ),
    (
        "max_tokens zero",
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
        400,
        "max_tokens",
        None,
    ),
    (
        "max_tokens a string",
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}',
        400,
        "max_tokens",
        None,
    ),
    (
        "five stop strings",
        b'{"messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}',
        400,
        "stop",
        None,
    ),
    ("n above one", b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', 400, "n", None),
    (
        "logprobs",
        b'{"messages": [{"role": "user", "content": "x"}], "logprobs": true}',
        400,
        "logprobs",
        None,
    ),
    (
        "unknown model",
        b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "model",
        "model_not_found",
    ),
    (
        "prompt longer than the context",
        json.dumps({"messages": [{"role": "user", "content": LONG}]}).encode(),
        400,
        "messages",
        "context_length_exceeded",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "param", "code"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_gets_an_openai_shaped_4xx_naming_the_param(
    served: srv.Server, case: str, body: bytes, status: int, param: str | None, code: str | None
) -> None:
    with served.client() as c:
        r = c.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == ("invalid_request_error")
    assert err["param"] == param
    if code:
        assert err["code"] == code
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b"x" * (4 * 1024 * 1024 + 10), 413),
        ("GET", "/v1/chat/completions", None, 405),
        ("GET", "/v1/nothing-here", None, 404),
    ],
)
def test_oversized_bodies_wrong_methods_and_unknown_paths_get_openai_errors(
    served: srv.Server, method: str, path: str, body: bytes | None, status: int
) -> None:
    with served.client() as c:
        r = c.request(method, path, content=body)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_the_server_still_answers_health_after_all_the_bad_input(served: srv.Server) -> None:
    with served.client() as c:
        assert c.get("/health").status_code == 200
    assert served.proc.poll() is None


def test_a_foreign_host_header_gets_403_even_with_the_key(served: srv.Server) -> None:
    with served.client() as c:
        r = c.get("/health", headers={"Host": f"attacker.example:{served.port}"})
        ok = c.get("/health", headers={"Host": f"localhost:{served.port}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    assert ok.status_code == 200


def test_no_cors_headers_are_sent_without_allow_origin(served: srv.Server) -> None:
    with served.client() as c:
        r = c.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert not any(h.lower().startswith("access-control-") for h in r.headers)


def test_the_server_listens_on_loopback_only(served: srv.Server) -> None:
    addrs = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    outside = [a for a in addrs if not a.startswith("127.")]
    for addr in outside:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((addr, served.port)) != 0, f"reachable on {addr}"


def test_prompt_and_answer_text_never_reach_the_log(served: srv.Server) -> None:
    marker = f"zebra-{uuid.uuid4().hex[:8]}"
    r = served.chat([{"role": "user", "content": f"Say {marker}"}], max_tokens=3)
    assert r.status_code == 200
    answer = r.json()["choices"][0]["message"]["content"]
    log = served.log_text()
    assert marker not in log
    assert not answer.strip() or answer not in log.replace("INFO", "")


def test_each_answer_logs_where_its_time_went_phase_by_phase(served: srv.Server) -> None:
    before = served.log_text().count(" timing ")
    count = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    r = served.chat(count, max_tokens=4, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    usage = json.loads(sse_events(r.text)[-2])["usage"]
    lines = [line for line in served.log_text().splitlines() if " timing " in line]
    assert len(lines) == before + 1  # logged before the answer's last frame went out
    got = timings.parse(lines[-1])
    assert got is not None, lines[-1]
    # Speculation is on by default: the answer's draft counts follow the figures.
    assert set(got) == set(timings.FIELDS) | set(timings.DRAFTS)
    for name, value in got.items():
        assert value is not None and value >= 0, (name, lines[-1])
    assert got["first_token_ms"] > 0 and got["decode_tps"] > 0  # type: ignore[operator]
    assert usage["completion_tokens"] > 1  # else there is no decode rate to log
    assert f" {usage['completion_tokens']} generated" in lines[-1]


def test_a_client_without_the_key_gets_401_on_every_path(served: srv.Server) -> None:
    for method, path in [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/nope"),
    ]:
        r = httpx.request(method, f"{served.base}{path}", timeout=10)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key"
