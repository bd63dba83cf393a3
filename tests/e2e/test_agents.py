"""End to end: the real Claude Code and Codex CLIs, default configuration, against the real server.

Both come from npm (tests/agent_clis.py installs them under tests/.cache/npm); only where npm is
absent are these skipped. HOME is a temp dir, telemetry is off and every URL is 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import agent_clis
from tests import server as srv
from tests.conftest import DEMO_ID

pytestmark = pytest.mark.e2e

LONG_ID = "long-llama"
LONG_CONTEXT = 131072
RUN_TIMEOUT = 300  # seconds: a CLI that hangs fails the test instead of the lane


@pytest.fixture(scope="module")
def modules() -> Path:
    """node_modules holding both CLIs, installed once; skipped only where npm is absent."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node are not on PATH: the real agent CLIs cannot be installed")
    return agent_clis.install()


def write_long_context_model(folder: Path, tokenizer_from: Path) -> Path:
    """A tiny random-weight llama with a 128k context and the demo model's tokenizer.

    Random weights would write until max_tokens (Claude Code asks for 32,000); this one ends
    every answer at once: its final norm keeps one hidden dimension and the output head maps it
    to the two end tokens with opposite signs, so one of them always wins by a wide margin.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from tests.tiny_model import model_args

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    vocab = int(json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    config = {
        **model_args(vocab),
        "max_position_embeddings": LONG_CONTEXT,
        "tie_word_embeddings": False,
        "eos_token_id": [0, 2],  # SmolLM2's <|endoftext|> and <|im_end|>
    }
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    hidden = int(config["hidden_size"])  # type: ignore[call-overload]
    keep = mx.zeros((hidden,)).at[0].add(1.0)
    head = mx.zeros((vocab, hidden)).at[0, 0].add(1e4).at[2, 0].add(-1e4)
    model.model.norm.weight = keep
    model.lm_head.weight = head
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def agents_home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (8k context) beside the long-context tiny llama."""
    home = tmp_path_factory.mktemp("agents-home")
    shutil.copytree(demo_home / "models", home / "models")
    write_long_context_model(home / "models" / LONG_ID, home / "models" / DEMO_ID)
    (home / "tiers.toml").write_text(
        f'[models.{DEMO_ID}]\npath = "models/{DEMO_ID}"\ntier = "fast"\n\n'
        f'[models.{LONG_ID}]\npath = "models/{LONG_ID}"\ntier = "long"\n'
    )
    return home


@pytest.fixture(scope="module")
def served(agents_home: Path) -> Iterator[srv.Server]:
    with srv.running(agents_home, "--default-max-tokens", "64") as s:
        yield s


def run_claude(
    modules: Path, server: srv.Server, tmp: Path, model: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`claude -p ... --model MODEL` in a scratch project, pointed at the server."""
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text("The meeting moved to Thursday.\n")
    return subprocess.run(
        [
            str(agent_clis.claude_binary(modules)),
            "-p",
            "What does notes.txt say?",
            "--model",
            model,
            *extra,
        ],
        env=agent_clis.claude_env(home, server.base, server.key),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_claude_code_on_an_8k_model_shows_anthropics_prompt_too_long_error(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_claude(modules, served, tmp_path, DEMO_ID)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert "prompt is too long" in said.lower(), said
    assert "Traceback" not in said and "Traceback" not in served.log_text()


def test_claude_code_on_a_128k_model_completes_its_session_through_streamed_messages(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_claude(modules, served, tmp_path, LONG_ID, "--output-format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["is_error"] is False, result
    usage = result["usage"]
    prompt = (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )
    assert prompt > 8192, "the whole default prompt (tools included) reached the model"
    assert "Traceback" not in served.log_text()


def run_codex(
    modules: Path, server: srv.Server, tmp: Path, model: str
) -> subprocess.CompletedProcess[str]:
    """`codex exec --skip-git-repo-check ...` with a custom Responses provider at the server."""
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text("The meeting moved to Thursday.\n")
    return subprocess.run(
        [
            *agent_clis.codex_command(modules),
            "exec",
            "--skip-git-repo-check",
            "What does notes.txt say?",
        ],
        env=agent_clis.codex_env(home, server.v1, server.key, model),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_codex_with_its_default_tools_completes_a_turn_through_responses(
    modules: Path, served: srv.Server, tmp_path: Path
) -> None:
    out = run_codex(modules, served, tmp_path, LONG_ID)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert "tokens used" in said, said
    assert "Traceback" not in served.log_text()
