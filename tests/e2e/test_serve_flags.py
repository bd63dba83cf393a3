"""End to end: serve flags and the home folder as a user sets them: key rotation, CORS, logging, config."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests import server as srv
from tests.conftest import LOGGING_FLAGS, run_cli


def test_a_rotated_key_works_at_once_and_the_old_one_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with srv.running(home) as s:
        old = s.key
        rotated = run_cli("key", "--rotate", "--home", home)
        assert rotated.returncode == 0
        new = rotated.stdout.strip()
        assert new and new != old
        assert (
            httpx.get(f"{s.base}/health", headers={"Authorization": f"Bearer {new}"}).status_code
            == 200
        )
        assert (
            httpx.get(f"{s.base}/health", headers={"Authorization": f"Bearer {old}"}).status_code
            == 401
        )


def test_allow_origin_sends_cors_headers_for_that_origin_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with srv.running(home, "--allow-origin", "http://app.test") as s, s.client() as c:
        ok = c.get("/v1/models", headers={"Origin": "http://app.test"})
        other = c.get("/v1/models", headers={"Origin": "http://evil.test"})
        preflight = httpx.options(
            f"{s.v1}/chat/completions",
            headers={"Origin": "http://app.test", "Access-Control-Request-Method": "POST"},
        )
    assert ok.headers["access-control-allow-origin"] == "http://app.test"
    assert not any(h.lower().startswith("access-control-") for h in other.headers)
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]


def test_config_toml_sets_serve_defaults_and_flags_override_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("max-queue = 0\nqueue-timeout = 5\n")
    with srv.running(home) as s:  # max-queue 0: nobody may wait; the flag below raises it
        assert s.proc.poll() is None
    bad = run_cli("serve", "--home", home, "--port", "not-a-port")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    (home / "config.toml").write_text("nonsense = 1\n")
    wrong = run_cli("serve", "--home", home, "--port", str(srv.free_port()))
    assert wrong.returncode == 2 and "nonsense" in wrong.stderr


def test_log_prompts_is_the_only_way_prompt_text_reaches_the_log(
    servers: srv.Servers, demo_home: Path
) -> None:
    marker = f"walrus-{uuid.uuid4().hex[:8]}"
    s = servers.get(demo_home, *LOGGING_FLAGS)  # the docs page's server: --log-prompts
    r = s.chat([{"role": "user", "content": f"Say {marker}"}], max_tokens=1)
    assert r.status_code == 200
    assert marker in s.log_text()


@pytest.mark.parametrize("flag", ["--host", "--bind"])
def test_there_is_no_flag_to_bind_another_address(flag: str, tmp_path: Path) -> None:
    out = run_cli("serve", "--home", tmp_path, flag, "0.0.0.0")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
