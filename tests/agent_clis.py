"""The real agent CLIs (Claude Code, Codex) installed from npm for tests, and how to run them at 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests import cache_lock

ROOT = Path(__file__).resolve().parent.parent
NPM_DIR = ROOT / "tests" / ".cache" / "npm"  # gitignored, like the demo GGUF
PACKAGES = ("@anthropic-ai/claude-code", "@openai/codex")


class NpmMissing(RuntimeError):
    """npm is not on PATH, so the agent CLIs cannot be installed."""


def install(packages: tuple[str, ...] = PACKAGES, timeout: float = 600) -> Path:
    """Install PACKAGES under tests/.cache/npm once (no-op when present) and return node_modules."""
    with cache_lock.held("npm"):  # parallel workers: one installs, the others find it there
        return _install(packages, timeout)


def _install(packages: tuple[str, ...], timeout: float) -> Path:
    modules = NPM_DIR / "node_modules"
    if all((modules / p / "package.json").is_file() for p in packages):
        return modules
    node = shutil.which("node")
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing("npm is not on PATH: install Node.js to run the real agent CLIs")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    manifest = NPM_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text('{"private": true}\n')
    subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", *packages],
        cwd=NPM_DIR,
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    claude = modules / "@anthropic-ai" / "claude-code"
    if node is not None and (claude / "install.cjs").is_file():
        # npm 11 runs no install scripts: this puts the native binary where `.bin/claude` points.
        subprocess.run(
            [node, "install.cjs"], cwd=claude, check=True, capture_output=True, timeout=timeout
        )
    return modules


def bin_dir(modules: Path) -> Path:
    """node_modules/.bin: `claude` and `codex` as a user's PATH has them after a global install."""
    return modules / ".bin"


def claude_binary(modules: Path) -> Path:
    """Claude Code's native binary: npm 11 skips its postinstall, so call the platform package's."""
    found = sorted(modules.glob("@anthropic-ai/claude-code-*/claude"))
    if not found:
        raise FileNotFoundError(f"no Claude Code platform binary under {modules}/@anthropic-ai")
    return found[0]


def codex_command(modules: Path) -> list[str]:
    """Codex's launcher: a node script that finds the binary in its platform package."""
    node = shutil.which("node")
    if node is None:
        raise NpmMissing("node is not on PATH")
    return [node, str(modules / "@openai" / "codex" / "bin" / "codex.js")]


def quiet_env(home: Path) -> dict[str, str]:
    """An environment with HOME at a temp dir, telemetry and updaters off, and no proxy."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return {
        **keep,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "CI": "1",
    }


def claude_env(home: Path, base_url: str, key: str) -> dict[str, str]:
    """Claude Code pointed at BASE_URL (the server root, no /v1) with KEY."""
    return {**quiet_env(home), "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": key}


def codex_env(home: Path, v1_url: str, key: str, model: str) -> dict[str, str]:
    """Codex with a custom Responses provider at V1_URL, its config written under HOME/.codex."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "tholos"\n'
        "\n"
        "[model_providers.tholos]\n"
        'name = "tholos"\n'
        f'base_url = "{v1_url}"\n'
        'env_key = "THOLOS_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
        "\n"
        "[analytics]\n"
        "enabled = false\n"
        "\n"
        "[otel]\n"
        'exporter = "none"\n'
    )
    return {**quiet_env(home), "CODEX_HOME": str(codex_home), "THOLOS_API_KEY": key}
