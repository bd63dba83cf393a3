"""Where the bench reaches a server: a URL as a user types it."""

from __future__ import annotations

import pytest

from tholos_mlx.bench.sides.client import Endpoint


@pytest.mark.parametrize(
    ("url", "host", "port", "base"),
    [
        ("http://127.0.0.1:1234/v1", "127.0.0.1", 1234, "/v1"),  # LM Studio
        ("http://localhost:11434", "localhost", 11434, "/v1"),  # Ollama, as its docs give it
        ("http://localhost:8080/v1/", "localhost", 8080, "/v1"),  # llama-server
        ("http://127.0.0.1/proxy", "127.0.0.1", 80, "/proxy/v1"),
    ],
)
def test_a_peer_url_names_host_port_and_the_v1_path(
    url: str, host: str, port: int, base: str
) -> None:
    to = Endpoint.parse(url)
    assert (to.host, to.port, to.base, to.key) == (host, port, base, None)
    assert to.url == f"http://{host}:{port}{base}"


@pytest.mark.parametrize("url", ["https://127.0.0.1/v1", "127.0.0.1:8080", "http://:80/v1"])
def test_anything_but_a_plain_http_url_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        Endpoint.parse(url)


def test_an_anthropic_stream_is_timed_and_its_usage_given_openai_s_names() -> None:
    from tholos_mlx.bench.sides.client import StreamStats, _take_anthropic, figures

    events = [
        b'event: message_start\ndata: {"type": "message_start", "message": {"usage": '
        b'{"input_tokens": 12, "cache_read_input_tokens": 88, "output_tokens": 1}}}',
        b'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, '
        b'"content_block": {"type": "text", "text": ""}}',
        b'event: ping\ndata: {"type": "ping"}',
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
        b'"delta": {"type": "text_delta", "text": "Hel"}}',
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
        b'"delta": {"type": "text_delta", "text": "lo"}}',
        b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": '
        b'"max_tokens"}, "usage": {"output_tokens": 3}}',
    ]
    run = StreamStats(sent_at=1.0)
    for at, event in enumerate(events):
        _take_anthropic(run, event, 2.0 + at)
    assert run.text == "Hello" and run.finish_reason == "max_tokens"
    fig = figures(run, 3)
    assert fig["ttft_s"] == 4.0  # the first text delta, not the message's start
    assert fig["prompt_tokens"] == 100 and fig["cached_tokens"] == 88
    assert fig["completion_tokens"] == 3 and not fig["stopped_early"]


def test_an_anthropic_error_event_fails_the_run() -> None:
    from tholos_mlx.bench.sides.client import BenchError, StreamStats, _take_anthropic

    with pytest.raises(BenchError, match="overloaded"):
        _take_anthropic(
            StreamStats(sent_at=0.0),
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}',
            1.0,
        )
