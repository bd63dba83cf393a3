"""Shared fixtures: a temp THOLOS_HOME per test, the tiny model made here, the demo GGUF (e2e)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import cache_lock
from tests import server as srv
from tests.tiny_model import TINY_ID, write_home

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "tests" / ".cache"  # gitignored; the tests own it, never the user's home
FETCH = ROOT / "scripts" / "fetch-demo-gguf"
DEMO_ID = "smollm2-135m"
DEMO_TIER = "fast"

# The docs page's server: prompts logged (a test reads what arrived), one place in line (a real
# 429 with two requests); the --log-prompts test of serve flags shares it.
LOGGING_FLAGS = ("--model", DEMO_TIER, "--log-prompts", "--max-queue", "1")

CLI = Callable[..., "subprocess.CompletedProcess[str]"]
pytest_plugins = ["pytester"]  # tests/test_fast_lane.py tries its check on a made-up suite


def run_cli(
    *args: str | Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m tholos_mlx ARGS` in a subprocess, as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "tholos_mlx", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(autouse=True)
def tholos_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty THOLOS_HOME; the user's real one is never touched."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("THOLOS_HOME", str(home))
    # Nothing a test runs may reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def cli() -> CLI:
    """The command line as a subprocess: cli("key", "--rotate") -> CompletedProcess."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A THOLOS_HOME with a tiny random-weight llama as `tiny-llama`, tier `fast`: no download.

    Shared by the whole session: treat it as read-only (copy it to change anything).
    """
    return write_home(tmp_path_factory.mktemp("tiny-home"))


@pytest.fixture(scope="session")
def tiny_folder(tiny_home: Path) -> Path:
    """The tiny model's MLX folder (config.json, random weights, a small BPE tokenizer)."""
    return tiny_home / "models" / TINY_ID


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf, fetched once into tests/.cache by fetch-demo-gguf."""
    with cache_lock.held("demo-gguf"):  # each parallel worker asks; one downloads
        out = subprocess.run(
            [str(FETCH), str(CACHE)],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHON": sys.executable},
        )
    if out.returncode != 0:
        pytest.fail(f"scripts/fetch-demo-gguf failed ({out.returncode}): {out.stderr.strip()}")
    path = Path(out.stdout.strip())
    assert path.is_file(), f"fetch-demo-gguf printed {out.stdout!r}"
    return path


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory, demo_gguf: Path) -> Iterator[Path]:
    """A THOLOS_HOME with the demo model imported as `smollm2-135m`, tier `fast`, by the real CLI.

    Shared by the whole session: treat it as read-only (copy it to change anything).
    """
    home = tmp_path_factory.mktemp("demo-home")
    out = run_cli("import-gguf", demo_gguf, "--id", DEMO_ID, "--tier", DEMO_TIER, "--home", home)
    if out.returncode != 0:
        pytest.fail(
            f"import-gguf of the demo model failed ({out.returncode}): {out.stderr.strip()}"
        )
    yield home


@pytest.fixture(scope="session")
def servers() -> Iterator[srv.Servers]:
    """Real servers shared across modules, keyed by home and flags; all stopped at the end."""
    shared = srv.Servers()
    yield shared
    shared.stop_all()


@pytest.fixture(scope="session")
def demo_server(servers: srv.Servers, demo_home: Path) -> srv.Server:
    """The demo model served through its tier with default flags, shared by every module using it.

    Tests on it must leave it running and read nothing a fresh server alone gives (an empty
    prompt cache, an empty log): those start their own with `srv.running`.
    """
    return servers.get(demo_home, "--model", DEMO_TIER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ starts the real server or model: marker `e2e` (the fast lane skips it)."""
    e2e = ROOT / "tests" / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
