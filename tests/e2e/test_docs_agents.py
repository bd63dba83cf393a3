"""docs/agents.md: every marked recipe runs against the real server, the agent CLIs' included."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import agent_clis
from tests import docs_runner as docs
from tests import server as srv
from tests.conftest import CACHE, ROOT
from tests.docs_runner import Ctx, lines
from tests.long_model import ANSWER, LONG_ID, write_agents_home

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "agents.md"
TEXT = DOC.read_text()
BLOCKS = docs.parse(TEXT)
MARKED = [b.name for b in BLOCKS if b.name]
NODE_DIR = CACHE / "node"  # shared with the other pages' JavaScript examples
QUIET = {"DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}


@pytest.fixture(scope="module")
def served(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[srv.Server]:
    """The demo model for the SDKs, beside a 128k-context model for the agent CLIs."""
    home = write_agents_home(tmp_path_factory.mktemp("docs-agents-home"), demo_home)
    with srv.running(home, "--model", "fast", "--default-max-tokens", "64") as s:
        yield s


@pytest.fixture(scope="module")
def ctx(served: srv.Server, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """The page's runner; its working folder is the reader's project, with notes.txt in it."""
    c = docs.page_ctx(BLOCKS, served, tmp_path_factory.mktemp("docs-agents"), NODE_DIR)
    (c.run.workdir / "notes.txt").write_text("The meeting moved to Thursday.\n")
    return c


def _needs_npm() -> None:
    problem = docs.node_problem()
    if problem:
        pytest.skip(f"{problem}: the JavaScript recipes and agent CLIs cannot be installed")


def _cli_env() -> dict[str, str | None]:
    """`claude` and `codex` on PATH, as after `npm install -g`, and the long-context model."""
    _needs_npm()
    bin_dir = agent_clis.bin_dir(agent_clis.install())
    path = os.environ.get("PATH", "")
    return {
        **QUIET,
        "PATH": f"{bin_dir}{os.pathsep}{ROOT / '.venv' / 'bin'}{os.pathsep}{path}",
        "MODEL": LONG_ID,
    }


# --- one check per marked recipe: what running it must show --------------------------------------


def claude_code_prints_the_models_answer(c: Ctx) -> None:
    out = c.run.run("agents-claude", env=_cli_env(), timeout=300).ok()
    assert out.stdout.strip() == ANSWER
    assert "Traceback" not in c.server.log_text()


def codex_prints_the_models_answer(c: Ctx) -> None:
    out = c.run.run("agents-codex", env=_cli_env(), timeout=300).ok()
    assert out.stdout.strip() == ANSWER


def agents_sdk_answers_paris(c: Ctx) -> None:
    assert "Paris" in c.run.run("agents-sdk").ok().stdout


def langchain_answers_paris(c: Ctx) -> None:
    assert "Paris" in lines(c.run.run("agents-langchain").ok())[-1]


CHECKS: dict[str, Callable[[Ctx], None]] = {
    "agents-claude": claude_code_prints_the_models_answer,
    "agents-codex": codex_prints_the_models_answer,
    "agents-sdk": agents_sdk_answers_paris,
    "agents-langchain": langchain_answers_paris,
}


def test_every_code_block_is_marked_as_tested_or_says_why_not() -> None:
    for b in BLOCKS:
        assert b.name or b.not_tested, f"docs/agents.md line {b.line}: unmarked {b.lang} block"


def test_every_marked_recipe_has_a_check_and_every_check_a_recipe() -> None:
    assert len(MARKED) == len(set(MARKED)), f"duplicate example names: {MARKED}"
    assert set(MARKED) == set(CHECKS)


def test_the_page_names_every_agent_and_the_volatile_prompt_lines() -> None:
    for name in ("Claude Code", "Codex", "Agents SDK (Python)", "Agents SDK (JavaScript)"):
        assert f"## {name}" in TEXT or f"## OpenAI {name}" in TEXT, name
    assert "## Vercel AI SDK" in TEXT and "## LangChain" in TEXT
    assert "## Volatile prompt lines" in TEXT and "x-anthropic-billing-header" in TEXT


@pytest.mark.parametrize("name", MARKED)
def test_every_marked_recipe_runs_and_does_what_the_page_says(name: str, ctx: Ctx) -> None:
    if shutil.which("node") is None and name in ("agents-claude", "agents-codex"):
        pytest.skip("node is not on PATH")
    CHECKS[name](ctx)
