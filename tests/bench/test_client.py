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
