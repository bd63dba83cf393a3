"""Tests for tholos_mlx.cli: argument parsing, exit codes and one-line errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLI
from tholos_mlx import __version__
from tholos_mlx.cli import build_parser, serve_flags


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--port", "0"], "--port"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--host", "0.0.0.0"], "--host"),
        (["serve", "--queue-timeout", "-1"], "--queue-timeout"),
        (["serve", "--max-queue", "many"], "--max-queue"),
        (["serve", "--idle-unload", "soon"], "--idle-unload"),
        (["serve", "--idle-unload", "-5m"], "--idle-unload"),
        (["serve", "--memory-limit", "0"], "--memory-limit"),
        (["serve", "--memory-limit", "nan"], "--memory-limit"),
        (["serve", "--kv-bits", "3"], "--kv-bits"),
        (["serve", "--disk-cache-gb", "-1"], "--disk-cache-gb"),
        (["launchd", "print", "--kv-bits", "16"], "--kv-bits"),
        (["frobnicate"], "frobnicate"),
        ([], "required"),
        (["import-gguf", "model.gguf"], "--id"),
        (["import-gguf", "--id", "x"], "FILE"),
        (["key", "--rotate", "extra"], "extra"),
        (["launchd", "start"], "start"),
        (["models", "add", "some/folder"], "--id"),
        (["models", "remove"], "ID"),
        (["models", "frobnicate"], "frobnicate"),
        (["cache"], "ACTION"),
        (["cache", "clear", "a", "b"], "b"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(cli: CLI, args: list[str], says: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "error" in lines[0] and says in lines[0]
    assert "Traceback" not in out.stderr


def test_a_bad_config_toml_makes_serve_exit_2_with_one_line(cli: CLI, tholos_home: Path) -> None:
    (tholos_home / "config.toml").write_text("port = 'abc'\n")
    out = cli("serve")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "config.toml" in out.stderr


def test_version_and_help_exit_0(cli: CLI) -> None:
    version = cli("--version")
    assert version.returncode == 0 and __version__ in version.stdout
    help_ = cli("--help")
    assert help_.returncode == 0
    for command in (
        "serve",
        "key",
        "models",
        "cache",
        "import-gguf",
        "launchd",
        "systemd",
        "bench",
    ):
        assert command in help_.stdout


def test_serve_help_has_no_host_flag(cli: CLI) -> None:
    out = cli("serve", "--help")
    assert out.returncode == 0
    # --hostfile (the ranks' hosts) is not a bind address: the server still binds 127.0.0.1 only.
    assert "--port" in out.stdout and re.search(r"--host(?![a-z])", out.stdout) is None


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["key"],
        ["key", "--rotate"],
        ["models"],
        ["models", "add", "folder", "--id", "x"],
        ["models", "scan", "--add"],
        ["models", "remove", "x", "--delete"],
        ["cache", "clear"],
        ["import-gguf", "f.gguf", "--id", "x"],
        ["launchd", "print"],
        ["systemd", "print"],
        ["bench"],
    ],
)
def test_home_is_accepted_after_any_subcommand(args: list[str], tmp_path: Path) -> None:
    parsed = build_parser().parse_args([*args, "--home", str(tmp_path)])
    assert parsed.home == str(tmp_path)


def test_home_is_accepted_before_the_subcommand(tmp_path: Path) -> None:
    assert build_parser().parse_args(["--home", str(tmp_path), "models"]).home == str(tmp_path)


def test_serve_flags_not_given_stay_none_so_config_toml_can_fill_them() -> None:
    flags = serve_flags(build_parser().parse_args(["serve"]))
    assert set(flags.values()) == {None}
    flags = serve_flags(
        build_parser().parse_args(
            ["serve", "--port", "9001", "--allow-origin", "http://a", "--allow-origin", "http://b"]
        )
    )
    assert flags["port"] == 9001
    assert flags["allow_origins"] == ("http://a", "http://b")


def test_the_all_day_flags_are_read_into_their_settings_types() -> None:
    flags = serve_flags(
        build_parser().parse_args(
            ["serve", "--idle-unload", "90s", "--memory-limit", "24", "--kv-bits", "4"]
            + ["--disk-cache-gb", "0"]
        )
    )
    assert (flags["idle_unload"], flags["memory_limit"], flags["kv_bits"]) == (90.0, 24.0, 4)
    assert flags["disk_cache_gb"] == 0.0
    assert (
        serve_flags(build_parser().parse_args(["serve", "--idle-unload", "0"]))["idle_unload"]
        == 0.0
    )


def test_import_gguf_of_a_missing_file_exits_2_with_one_line(cli: CLI, tmp_path: Path) -> None:
    out = cli("import-gguf", tmp_path / "nope.gguf", "--id", "x")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"tholos-mlx: error: no such file: {tmp_path / 'nope.gguf'}"
    ]


def test_import_gguf_with_a_bad_id_exits_2_with_one_line(cli: CLI, tmp_path: Path) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    out = cli("import-gguf", src, "--id", "../escape")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "invalid model id" in out.stderr


def test_serve_on_a_port_already_taken_exits_2_with_one_line(cli: CLI, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("serve", "--home", tmp_path, "--port", str(port))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert str(port) in out.stderr and "Traceback" not in out.stderr


def test_a_home_that_cannot_be_expanded_or_written_gives_one_line(cli: CLI) -> None:
    odd = cli("key", "--home", "~nosuchuser-tholos/x")
    assert odd.returncode == 2 and "Traceback" not in odd.stderr
    assert len(odd.stderr.strip().splitlines()) == 1
    unwritable = cli("key", "--home", "/proc/tholos-cannot-exist")
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr
    assert len(unwritable.stderr.strip().splitlines()) == 1


CRASHING_SERVE = """
import sys
import tholos_mlx.app

def create_app(*args, **kwargs):
    raise RuntimeError("fault injected by the test")

tholos_mlx.app.create_app = create_app
from tholos_mlx.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_serve_that_crashes_logs_its_traceback_and_exits_non_zero(tmp_path: Path) -> None:
    # launchd (KeepAlive Crashed) and systemd (Restart=on-failure) restart only a non-zero exit.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_SERVE, "serve", "--home", tmp_path, "--port", str(port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "THOLOS_HOME": str(tmp_path)},
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" in out.stderr
    assert "RuntimeError: fault injected by the test" in out.stderr
