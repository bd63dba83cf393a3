"""Serve settings, resolved once: defaults < config.toml < command-line flags.

`Settings` is the one table of serve settings: each field declares its flag, how its value is
read (from flag text and from config.toml), its check, its default and its help line. The
argparse flags (cli.add_serve_flags), config.toml reading, validation and the service files'
argv (service.manager.flag_argv) are all derived from it.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Collection

from tholos_mlx.errors import UsageError
from tholos_mlx.home import CONFIG_FILE

DEFAULT_PORT = 8756

Check = Callable[[Any], str | None]
"""A value's problem as the end of a sentence ("must be 0 or more, not -1"), or None."""


@dataclass(frozen=True)
class Kind:
    """How a setting's value is read from command-line text and from a config.toml value."""

    expect: str  # ends "config.toml: NAME must be ..." when a config.toml value has another type
    from_text: Callable[[str], Any]  # raises ValueError with the problem
    from_toml: Callable[[object], Any]  # raises TypeError when the TOML value has the wrong type
    to_text: Callable[[Any], str] = str  # back to one command-line word
    action: str = "store"  # argparse: "store", "store_true" (a switch) or "append" (repeatable)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


def _toml_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def _toml_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _toml_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _toml_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _toml_strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError
    return tuple(value)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in "0", "90s", "30m", "2h" or plain seconds ("45", "2.5")."""
    t = text.strip().lower()
    scale = _UNITS.get(t[-1:], 1.0)
    number = t[:-1] if t[-1:] in _UNITS else t
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = math.nan
    if not number[:1].isdigit() or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (use 0, 90s, 30m, 2h or seconds)")
    return seconds


def duration_text(seconds: float) -> str:
    """A duration as parse_duration reads it back, in the largest whole unit."""
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds and seconds % scale == 0:
            return f"{int(seconds // scale)}{unit}"
    return repr(float(seconds)) if seconds else "0"


def _toml_duration(value: object) -> float:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise TypeError from None
    return _toml_float(value)


def _float_text(value: float) -> str:
    return repr(float(value))


def _abs_path(text: str) -> str:
    return str(Path(text).expanduser().absolute())


def _toml_abs_path(value: object) -> str:
    return _abs_path(_toml_str(value))


INT = Kind("of type int", _int, _toml_int)
FLOAT = Kind("of type float", _float, _toml_float, _float_text)
TEXT = Kind("of type str", str, _toml_str)
# A file the service files name too: absolute, since launchd and systemd start elsewhere.
PATH = Kind("of type str", _abs_path, _toml_abs_path)
SWITCH = Kind("true or false", str, _toml_bool, action="store_true")
TEXTS = Kind("a list of strings", str, _toml_strings, action="append")
DURATION = Kind(
    "a duration such as 0, 90s, 30m or 2h, or a number of seconds",
    parse_duration,
    _toml_duration,
    duration_text,
)


def _between(low: int, high: int) -> Check:
    def check(v: int) -> str | None:
        return None if low <= v <= high else f"must be between {low} and {high}, not {v}"

    return check


def _at_least_0(v: float) -> str | None:
    return None if v >= 0 else f"must be 0 or more, not {v}"


def _positive(what: str) -> Check:
    def check(v: float) -> str | None:  # `not v > 0` also refuses nan
        return None if v > 0 else f"must be a positive number of {what}, not {v}"

    return check


def _finite(inner: Check) -> Check:
    def check(v: float) -> str | None:
        return inner(v) or (None if math.isfinite(v) else f"must be a finite number, not {v}")

    return check


def _one_of(*allowed: int) -> Check:
    def check(v: int) -> str | None:
        return None if v in allowed else f"must be {' or '.join(map(str, allowed))}, not {v}"

    return check


def _named(*allowed: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in allowed else f"must be {' or '.join(allowed)}, not {v!r}"

    return check


@dataclass(frozen=True)
class Setting:
    """One row of the table: a serve setting's flag, reading, check and help."""

    flag: str
    kind: Kind
    help: str
    metavar: str | None = None
    shown_default: str | None = None  # for --help where the default value alone says too little
    check: Check | None = None
    name: str = ""  # the Settings field; filled in from it
    default: Any = None  # likewise

    def parse(self, text: str) -> Any:
        """A command-line word as this setting's value; ValueError says what is wrong."""
        value = self.kind.from_text(text)
        problem = self.check(value) if self.check else None
        if problem:
            raise ValueError(problem)
        return value

    def default_text(self) -> str:
        """The default as --help shows it."""
        if self.shown_default is not None:
            return self.shown_default
        return self.kind.to_text(self.default)


_ROW = "tholos.serve"


def _setting(
    default: Any,
    flag: str,
    kind: Kind,
    help: str,  # noqa: A002 (argparse's word)
    *,
    metavar: str | None = None,
    shown: str | None = None,
    check: Check | None = None,
) -> Any:
    """A Settings field that is also a serve flag and a config.toml key."""
    row = Setting(flag, kind, help, metavar, shown, check)
    return field(default=default, metadata={_ROW: row})


@dataclass(frozen=True)
class Settings:
    """Everything `serve` needs; read-only once built. Each serve setting is declared once, here."""

    home: Path
    port: int = _setting(
        DEFAULT_PORT, "--port", INT, "port on 127.0.0.1", metavar="PORT", check=_between(1, 65535)
    )
    model: str | None = _setting(
        None, "--model", TEXT, "model id or tier to load before serving", metavar="ID", shown="none"
    )
    queue_timeout: float = _setting(
        60.0,
        "--queue-timeout",
        FLOAT,
        "seconds a request may wait for its turn before a 503",
        metavar="S",
        shown="60",
        check=_positive("seconds"),
    )
    max_queue: int = _setting(
        8,
        "--max-queue",
        INT,
        "requests allowed to wait; more get 429",
        metavar="N",
        check=_at_least_0,
    )
    allow_origins: tuple[str, ...] = _setting(
        (),
        "--allow-origin",
        TEXTS,
        "send CORS headers for this browser origin (repeatable)",
        metavar="ORIGIN",
        shown="none",
    )
    log_prompts: bool = _setting(
        False,
        "--log-prompts",
        SWITCH,
        "log prompt and answer text (without it they never reach the log)",
        shown="off",
    )
    prompt_cache_mb: int | None = _setting(
        None,
        "--prompt-cache-mb",
        INT,
        "memory for reusable prompt caches; 0 turns it off",
        metavar="MB",
        shown="sized from the model",
        check=_at_least_0,
    )
    idle_unload: float = _setting(
        1800.0,
        "--idle-unload",
        DURATION,
        "unload the model after this long without a request (90s, 30m, 2h; 0 never)",
        metavar="DURATION",
        check=_at_least_0,
    )
    memory_limit: float | None = _setting(
        None,
        "--memory-limit",
        FLOAT,
        "memory in GB that the model and its KV cache may use",
        metavar="GB",
        shown="what MLX reports as the working set",
        check=_finite(_positive("gigabytes")),
    )
    kv_bits: int | None = _setting(
        None,
        "--kv-bits",
        INT,
        "store the KV cache quantized to 4 or 8 bits",
        metavar="4|8",
        shown="unquantized",
        check=_one_of(4, 8),
    )
    disk_cache_gb: float = _setting(
        4.0,
        "--disk-cache-gb",
        FLOAT,
        "disk space in GB for prompt caches kept across restarts; 0 turns it off",
        metavar="GB",
        shown="4",
        check=_finite(_at_least_0),
    )
    default_max_tokens: int = _setting(
        4096,
        "--default-max-tokens",
        INT,
        "most tokens an answer may have when the request names no limit (or the room left)",
        metavar="N",
        check=_positive("tokens"),
    )
    speculative: str = _setting(
        "ngram",
        "--speculative",
        TEXT,
        "draft tokens and verify them in one pass: from the prompt and answer (ngram), a "
        "small model (draft), or not at all (off)",
        metavar="ngram|draft|off",
        check=_named("ngram", "draft", "off"),
    )
    draft_model: str | None = _setting(
        None,
        "--draft-model",
        TEXT,
        "with --speculative draft: the model id or tier that drafts (same tokenizer)",
        metavar="ID",
        shown="none",
    )
    num_draft_tokens: int = _setting(
        4,
        "--num-draft-tokens",
        INT,
        "most tokens drafted ahead per verify pass (the depth adapts below it)",
        metavar="N",
        check=_positive("tokens"),
    )
    hostfile: str | None = _setting(
        None,
        "--hostfile",
        PATH,
        "serve one model across the hosts of this mlx.launch hostfile, one rank each "
        '([{"ssh": HOST, "ips": [IP]}, ...]; 127.0.0.1 runs here without ssh)',
        metavar="FILE",
        shown="one process",
    )
    backend: str = _setting(
        "ring",
        "--backend",
        TEXT,
        "how the ranks of --hostfile talk: ring (TCP over Ethernet or Thunderbolt) or jaccl "
        "(Thunderbolt RDMA)",
        metavar="ring|jaccl",
        check=_named("ring", "jaccl"),
    )
    max_body_bytes: int = 4 * 1024 * 1024


SERVE_SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata[_ROW], name=f.name, default=f.default)
    for f in fields(Settings)
    if _ROW in f.metadata
)
"""The serve settings in --help order."""

SERVE_FLAGS: dict[str, str] = {s.name: s.flag for s in SERVE_SETTINGS}
"""Setting name -> command-line spelling."""

# config.toml may spell a setting as its name or as its flag, with `-` or `_`.
_BY_KEY: dict[str, Setting] = {
    spelling: s
    for s in SERVE_SETTINGS
    for base in (s.name, s.flag.removeprefix("--"))
    for spelling in (base, base.replace("_", "-"), base.replace("-", "_"))
}


def load_file(home: Path) -> dict[str, Any]:
    """The overrides that THOLOS_HOME/config.toml sets, type-checked (ranges: see validate)."""
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
        setting = _BY_KEY.get(key)
        if setting is None:
            raise UsageError(f"{path}: unknown setting {key!r}")
        try:
            out[setting.name] = setting.kind.from_toml(value)
        except TypeError:
            raise UsageError(
                f"{CONFIG_FILE}: {setting.name} must be {setting.kind.expect}"
            ) from None
    return out


def build(home: Path, flags: dict[str, Any]) -> Settings:
    """Defaults, then config.toml, then the flags the user actually gave (not None)."""
    from_file = load_file(home)
    given = {k: v for k, v in flags.items() if v is not None and k in SERVE_FLAGS}
    settings = replace(Settings(home=home), **{**from_file, **given})
    validate(settings, home / CONFIG_FILE, set(from_file) - set(given))
    return settings


def validate(s: Settings, config_path: Path | None = None, from_file: Collection[str] = ()) -> None:
    """Each setting's check; a value that came from config.toml is named with the file."""
    for setting in SERVE_SETTINGS:
        value = getattr(s, setting.name)
        problem = setting.check(value) if setting.check and value is not None else None
        if problem:
            where = f"{config_path}: " if config_path and setting.name in from_file else ""
            raise UsageError(f"{where}{setting.flag} {problem}")
