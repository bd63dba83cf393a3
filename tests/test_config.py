"""Tests for tholos_mlx.config: defaults < config.toml < command-line flags."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from tholos_mlx.config import (
    DEFAULT_PORT,
    SERVE_SETTINGS,
    Settings,
    build,
    duration_text,
    load_file,
    parse_duration,
)
from tholos_mlx.errors import UsageError

NO_FLAGS: dict[str, object] = {
    "port": None,
    "model": None,
    "queue_timeout": None,
    "max_queue": None,
    "allow_origins": None,
    "log_prompts": None,
    "prompt_cache_mb": None,
}


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


def test_without_config_toml_or_flags_the_defaults_apply(tholos_home: Path) -> None:
    s = build(tholos_home, NO_FLAGS)
    assert s == Settings(home=tholos_home)
    assert (s.port, s.model, s.queue_timeout, s.max_queue) == (DEFAULT_PORT, None, 60.0, 8)
    assert (s.allow_origins, s.log_prompts) == ((), False)
    assert s.port == 8756


def test_config_toml_overrides_the_defaults(tholos_home: Path) -> None:
    write_config(
        tholos_home,
        """
port = 9000
model = "fast"
queue-timeout = 5
max_queue = 2
allow-origin = ["http://localhost:3000"]
log-prompts = true
""",
    )
    s = build(tholos_home, NO_FLAGS)
    assert (s.port, s.model, s.queue_timeout, s.max_queue) == (9000, "fast", 5.0, 2)
    assert isinstance(s.queue_timeout, float)
    assert s.allow_origins == ("http://localhost:3000",)
    assert s.log_prompts is True


def test_flags_override_config_toml_and_absent_flags_do_not(tholos_home: Path) -> None:
    write_config(tholos_home, "port = 9000\nmax-queue = 2\n")
    s = build(tholos_home, {**NO_FLAGS, "port": 9100, "allow_origins": ("https://a.example",)})
    assert s.port == 9100
    assert s.max_queue == 2
    assert s.allow_origins == ("https://a.example",)


def test_a_serve_table_in_config_toml_is_read_too(tholos_home: Path) -> None:
    write_config(tholos_home, "[serve]\nport = 9200\n")
    assert build(tholos_home, NO_FLAGS).port == 9200


def test_settings_are_read_only(tholos_home: Path) -> None:
    s = build(tholos_home, NO_FLAGS)
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_missing_config_toml_gives_no_overrides(tholos_home: Path) -> None:
    assert load_file(tholos_home) == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("port = [", "not valid TOML"),
        ("port = 'abc'", "port must be of type int"),
        ("port = true", "port must be of type int"),
        ("colour = 'red'", "unknown setting 'colour'"),
        ("allow-origin = [1]", "allow_origins must be a list of strings"),
        ("port = 70000", "--port must be between 1 and 65535"),
        ("queue-timeout = 0", "--queue-timeout must be a positive"),
        ("max-queue = -1", "--max-queue must be 0 or more"),
    ],
)
def test_a_bad_config_toml_is_a_usage_error_saying_what_is_wrong(
    tholos_home: Path, text: str, says: str
) -> None:
    write_config(tholos_home, text)
    with pytest.raises(UsageError, match=says.replace("[", r"\[")):
        build(tholos_home, NO_FLAGS)


def test_a_queue_timeout_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("queue-timeout = nan\n")
    with pytest.raises(UsageError, match="queue-timeout"):
        build(tmp_path, {})


def test_a_serve_key_that_is_not_a_table_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("serve = 1\n")
    with pytest.raises(UsageError, match="table"):
        build(tmp_path, {})


def test_the_new_all_day_settings_have_their_documented_defaults(tholos_home: Path) -> None:
    s = build(tholos_home, NO_FLAGS)
    assert (s.idle_unload, s.memory_limit, s.kv_bits, s.disk_cache_gb) == (1800.0, None, None, 4.0)


def test_answers_that_name_no_limit_are_capped_at_4096_tokens_by_default(tholos_home: Path) -> None:
    assert build(tholos_home, NO_FLAGS).default_max_tokens == 4096
    write_config(tholos_home, "default-max-tokens = 512\n")
    assert build(tholos_home, NO_FLAGS).default_max_tokens == 512
    assert build(tholos_home, {**NO_FLAGS, "default_max_tokens": 64}).default_max_tokens == 64


def test_a_default_max_tokens_below_one_is_refused_naming_the_file(tholos_home: Path) -> None:
    write_config(tholos_home, "default-max-tokens = 0\n")
    with pytest.raises(UsageError, match="config.toml: --default-max-tokens must be a positive"):
        build(tholos_home, NO_FLAGS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("45", 45.0), ("2.5", 2.5)],
)
def test_a_duration_reads_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(duration_text(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5d", "m", "-5", "inf", "nan", "1.5.2h"])
def test_a_text_that_is_no_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_config_toml_sets_the_all_day_settings(tholos_home: Path) -> None:
    write_config(
        tholos_home,
        'idle-unload = "2h"\nmemory-limit = 12\nkv_bits = 8\ndisk-cache-gb = 0\n',
    )
    s = build(tholos_home, NO_FLAGS)
    assert (s.idle_unload, s.memory_limit, s.kv_bits, s.disk_cache_gb) == (7200.0, 12.0, 8, 0.0)
    write_config(tholos_home, "idle-unload = 90\n")
    assert build(tholos_home, NO_FLAGS).idle_unload == 90.0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("idle-unload = 'soon'", "idle_unload must be a duration"),
        ("idle-unload = -1", "--idle-unload must be 0 or more"),
        ("memory-limit = 0", "--memory-limit must be a positive number of gigabytes"),
        ("memory-limit = 'lots'", "memory_limit must be of type float"),
        ("kv-bits = 3", "--kv-bits must be 4 or 8, not 3"),
        ("disk-cache-gb = -1", "--disk-cache-gb must be 0 or more"),
        ("disk-cache-gb = inf", "--disk-cache-gb must be a finite number"),
    ],
)
def test_a_bad_all_day_setting_in_config_toml_is_one_line_naming_the_file(
    tholos_home: Path, text: str, says: str
) -> None:
    write_config(tholos_home, text)
    with pytest.raises(UsageError, match=says) as caught:
        build(tholos_home, NO_FLAGS)
    assert "config.toml" in str(caught.value) and "\n" not in str(caught.value)


def test_every_serve_setting_is_a_settings_field_with_a_flag_and_help() -> None:
    table = {s.name: s for s in SERVE_SETTINGS}
    assert set(table) == {f.name for f in fields(Settings)} - {"home", "max_body_bytes"}
    assert len({s.flag for s in SERVE_SETTINGS}) == len(SERVE_SETTINGS)
    for s in SERVE_SETTINGS:
        assert s.flag.startswith("--") and s.help
        if s.default is not None and s.kind.action == "store":
            assert s.parse(s.kind.to_text(s.default)) == s.default, s.name


def test_speculation_defaults_to_prompt_lookup_four_tokens_deep(tholos_home: Path) -> None:
    s = build(tholos_home, NO_FLAGS)
    assert (s.speculative, s.draft_model, s.num_draft_tokens) == ("ngram", None, 4)
    write_config(tholos_home, 'speculative = "off"\nnum-draft-tokens = 2\n')
    s = build(tholos_home, {**NO_FLAGS, "num_draft_tokens": 6})
    assert (s.speculative, s.num_draft_tokens) == ("off", 6)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('speculative = "eagle"', "--speculative must be ngram or draft or off, not 'eagle'"),
        ("num-draft-tokens = 0", "--num-draft-tokens must be a positive number of tokens"),
    ],
)
def test_a_bad_speculation_setting_is_one_line_naming_the_file(
    tholos_home: Path, text: str, says: str
) -> None:
    write_config(tholos_home, text)
    with pytest.raises(UsageError, match=says) as caught:
        build(tholos_home, NO_FLAGS)
    assert "config.toml" in str(caught.value) and "\n" not in str(caught.value)
