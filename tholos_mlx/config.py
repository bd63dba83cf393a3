"""Serve settings, resolved once: defaults < config.toml < command-line flags."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tholos_mlx.errors import UsageError
from tholos_mlx.home import CONFIG_FILE

DEFAULT_PORT = 8756

# The serve flags: setting name -> command-line spelling. One list for the parser's reader
# (cli.serve_flags) and for the services that write them back (service.flag_argv).
SERVE_FLAGS: dict[str, str] = {
    "port": "--port",
    "model": "--model",
    "queue_timeout": "--queue-timeout",
    "max_queue": "--max-queue",
    "allow_origins": "--allow-origin",
    "log_prompts": "--log-prompts",
    "prompt_cache_mb": "--prompt-cache-mb",
}


@dataclass(frozen=True)
class Settings:
    """Everything `serve` needs; read-only once built."""

    home: Path
    port: int = DEFAULT_PORT
    model: str | None = None
    queue_timeout: float = 60.0
    max_queue: int = 8
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    log_prompts: bool = False
    prompt_cache_mb: int | None = None  # None: sized from the model
    max_body_bytes: int = 4 * 1024 * 1024


_KEYS: dict[str, type] = {
    "port": int,
    "model": str,
    "queue_timeout": float,
    "max_queue": int,
    "allow_origins": list,
    "log_prompts": bool,
    "prompt_cache_mb": int,
}


def _check(name: str, value: Any) -> Any:
    kind = _KEYS[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"config.toml: {name} must be of type {kind.__name__}")
    if name == "allow_origins":
        if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
            raise UsageError("config.toml: allow_origins must be a list of strings")
        return tuple(value)
    return value


def load_file(home: Path) -> dict[str, Any]:
    """The overrides that THOLOS_HOME/config.toml sets (flag spelling, `-` or `_`)."""
    path = home / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    table = raw.get("serve", raw)
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [serve] must be a table of settings")
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "allow_origin":
            name = "allow_origins"
        if name not in _KEYS:
            raise UsageError(f"{path}: unknown setting {key!r}")
        out[name] = _check(name, value)
    return out


def build(home: Path, flags: dict[str, Any]) -> Settings:
    """Defaults, then config.toml, then the flags the user actually gave (not None)."""
    merged: dict[str, Any] = load_file(home)
    merged.update({k: v for k, v in flags.items() if v is not None})
    known = {f.name for f in fields(Settings)}
    settings = replace(Settings(home=home), **{k: v for k, v in merged.items() if k in known})
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Ranges the flags and the file must respect."""
    if not 1 <= s.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, not {s.port}")
    if not s.queue_timeout > 0:  # also refuses nan, which would make waiters wait forever
        raise UsageError("--queue-timeout must be a positive number of seconds")
    if s.max_queue < 0:
        raise UsageError("--max-queue must be 0 or more")
    if s.prompt_cache_mb is not None and s.prompt_cache_mb < 0:
        raise UsageError("--prompt-cache-mb must be 0 or more")
