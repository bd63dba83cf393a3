"""End to end: what the server's log says about requests it refuses (and what it never says)."""

from __future__ import annotations

import pytest

from tests import server as srv

pytestmark = pytest.mark.e2e

TOO_LONG = "word " * 9000  # past the demo model's 8,192-token context


def test_a_prompt_refused_as_too_long_leaves_no_tokenizer_warning_in_the_log(
    demo_server: srv.Server,
) -> None:
    # The shared server's whole log: no request any module sent may leave the warning.
    with demo_server.client() as c:
        counted = c.post(
            "/v1/messages/count_tokens",
            json={"model": "fast", "messages": [{"role": "user", "content": TOO_LONG}]},
        )
        refused = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": TOO_LONG}], "max_tokens": 1},
        )
    log = demo_server.log_text()
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 8192
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert "Token indices sequence length" not in log
