"""End to end: `scripts/serve-demo` as a newcomer runs it: progress, PORT, and where the CLI is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests import server as srv
from tests.conftest import ROOT


def test_serve_demo_shows_its_steps_serves_on_port_and_prints_the_cli_path(
    demo_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)  # the model is there: no download, no conversion
    port = srv.free_port()
    out = tmp_path / "serve-demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "serve-demo")],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "THOLOS_HOME": str(home), "PORT": str(port)},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, out.read_text()
            try:
                key = (home / "api_key").read_text().strip()  # serve-demo creates it
                if httpx.get(
                    f"http://127.0.0.1:{port}/health",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=2,
                ).is_success:
                    break
            except (httpx.HTTPError, FileNotFoundError):
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = out.read_text()
    assert "serve-demo: installing tholos-mlx into .venv" in text
    assert f"http://127.0.0.1:{port}/v1" in text
    cli = ROOT / ".venv" / "bin" / "tholos-mlx"
    assert f"The command line is {cli}" in text and cli.is_file()
    assert "PORT=8757" in text
