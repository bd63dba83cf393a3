"""Tests for tholos_mlx.home: where state lives, atomic writes, and the API key."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from tests.conftest import CLI
from tholos_mlx import home as home_mod
from tholos_mlx.home import (
    KeyStore,
    default_home,
    ensure_key,
    resolve_home,
    rotate_key,
    write_atomic,
)


def _random_part(key: str) -> bytes:
    """The random bytes behind a key, whatever readable prefix it carries."""
    token = key.removeprefix("tholos-")
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_key_is_created_on_first_use_with_mode_0600_and_at_least_32_url_safe_random_bytes(
    tholos_home: Path,
) -> None:
    key = ensure_key(tholos_home)
    path = tholos_home / home_mod.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    assert len(_random_part(key)) >= 32
    assert path.read_text().strip() == key


def test_ensure_key_returns_the_same_key_every_time(tholos_home: Path) -> None:
    assert ensure_key(tholos_home) == ensure_key(tholos_home)


def test_two_homes_get_different_keys(tmp_path: Path) -> None:
    assert ensure_key(tmp_path / "a") != ensure_key(tmp_path / "b")


def test_rotate_key_replaces_the_key_and_keeps_mode_0600(tholos_home: Path) -> None:
    old = ensure_key(tholos_home)
    new = rotate_key(tholos_home)
    assert new != old
    assert ensure_key(tholos_home) == new
    assert stat.S_IMODE((tholos_home / home_mod.KEY_FILE).stat().st_mode) == 0o600


def test_key_command_prints_the_same_key_twice(cli: CLI, tholos_home: Path) -> None:
    first, second = cli("key"), cli("key")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() == ensure_key(tholos_home)
    assert len(first.stdout.strip().splitlines()) == 1


def test_key_rotate_command_prints_a_new_key_that_key_then_prints(cli: CLI) -> None:
    old = cli("key").stdout.strip()
    rotated = cli("key", "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new and new != old
    assert cli("key").stdout.strip() == new


def test_keystore_accepts_the_current_key_and_rejects_others(tholos_home: Path) -> None:
    store = KeyStore(tholos_home)
    key = ensure_key(tholos_home)
    assert store.matches(key)
    assert not store.matches(key + "x")
    assert not store.matches("")


def test_keystore_picks_up_a_rotated_key_without_being_rebuilt(tholos_home: Path) -> None:
    store = KeyStore(tholos_home)
    old = ensure_key(tholos_home)
    assert store.matches(old)
    new = rotate_key(tholos_home)
    assert store.matches(new)
    assert not store.matches(old)


def test_keystore_creates_the_key_when_there_is_none(tholos_home: Path) -> None:
    store = KeyStore(tholos_home)
    assert store.matches(ensure_key(tholos_home))


def test_write_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    write_atomic(target, b"one")
    write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["file.txt"]


def test_home_flag_wins_over_tholos_home_and_the_default(tmp_path: Path) -> None:
    env = {"THOLOS_HOME": str(tmp_path / "env"), "HOME": str(tmp_path / "user")}
    assert resolve_home(str(tmp_path / "flag"), env) == tmp_path / "flag"


def test_tholos_home_wins_over_the_default(tmp_path: Path) -> None:
    env = {"THOLOS_HOME": str(tmp_path / "env"), "HOME": str(tmp_path / "user")}
    assert resolve_home(None, env) == tmp_path / "env"


def test_without_flag_or_env_the_platform_default_is_used(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "user")}
    assert resolve_home(None, env) == default_home(env).absolute()


def test_default_home_on_linux_follows_xdg_data_home(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert default_home(env, "linux") == tmp_path / "xdg" / "tholos"


def test_default_home_on_linux_without_xdg_is_under_local_share() -> None:
    assert default_home({"HOME": "/home/u"}, "linux") == Path("/home/u/.local/share/tholos")


def test_default_home_on_macos_is_application_support_even_with_xdg_set() -> None:
    env = {"HOME": "/Users/u", "XDG_DATA_HOME": "/elsewhere"}
    assert default_home(env, "darwin") == Path("/Users/u/Library/Application Support/Tholos")


def test_every_test_runs_with_a_temporary_tholos_home(
    tholos_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert os.environ["THOLOS_HOME"] == str(tholos_home)
    assert resolve_home() == tholos_home
    assert tmp_path_factory.getbasetemp() in tholos_home.parents


@pytest.mark.parametrize("where", ["before", "after"])
def test_key_command_honours_home_before_or_after_the_subcommand(
    cli: CLI, tmp_path: Path, where: str
) -> None:
    chosen = tmp_path / "chosen"
    args = ["--home", str(chosen), "key"] if where == "before" else ["key", "--home", str(chosen)]
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    assert (chosen / home_mod.KEY_FILE).read_text().strip() == out.stdout.strip()


def test_a_presented_key_that_is_not_valid_text_simply_does_not_match(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    assert keys.matches("\udcc3(") is False  # undecodable header bytes arrive as surrogates
