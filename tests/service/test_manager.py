"""What launchd and systemd do alike (manager.py): one body per behaviour, run for each of them."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.service.fakes import (
    LAUNCHD_TARGET,
    UNIT,
    FakeHealth,
    FakeLaunchctl,
    FakeSystemctl,
    agent_file,
    flags,
    linux,
    mac,
    settings_for,
    systemd_words,
    unit_file,
    value,
)
from tholos_mlx import home as home_module
from tholos_mlx.errors import UsageError
from tholos_mlx.service import launchd, systemd
from tholos_mlx.service.manager import Host

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Kind:
    """One service manager as the tests drive it."""

    name: str
    module: ModuleType
    users_copy: Path  # the file in the repository users read
    fake: Callable[[], Any]  # a fresh fake launchctl / systemctl
    host: Callable[[Path, Any, FakeHealth | None], Host]  # the OS it is for
    file: Callable[[Path], Path]  # where install writes, in the pretend user home
    argv: Callable[[str], list[str]]  # the serve command line of a printed file
    os_name: str  # what the refusal on the other OS names
    other_command: str
    uninstalled_calls: list[list[str]]  # what uninstalling an uninstalled service asks


def plist_argv(text: str) -> list[str]:
    return list(plistlib.loads(text.encode())["ProgramArguments"])


def unit_argv(text: str) -> list[str]:
    return systemd_words(value(text, "Service", "ExecStart")[0])


KINDS = [
    Kind(
        "launchd",
        launchd,
        REPO / "launchd" / "ai.tholos.mlx.plist",
        FakeLaunchctl,
        lambda tmp, runner, health: mac(tmp, runner, health),
        agent_file,
        plist_argv,
        "macOS",
        "tholos-mlx systemd install",
        [["launchctl", "bootout", LAUNCHD_TARGET], ["launchctl", "print", LAUNCHD_TARGET]],
    ),
    Kind(
        "systemd",
        systemd,
        REPO / "systemd" / UNIT,
        FakeSystemctl,
        lambda tmp, runner, health: linux(tmp, runner, health),
        unit_file,
        unit_argv,
        "Linux",
        "tholos-mlx launchd install",
        [],  # no unit file: nothing for systemd to stop
    ),
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


def run(
    kind: Kind, action: str, home: Path, given: dict[str, Any], host: Host | None = None
) -> int:
    """`tholos-mlx KIND ACTION` with these flags, called the way cli.py calls it."""
    return int(kind.module.command(action, settings_for(home, given), given, host))


def printed(
    kind: Kind, capsys: pytest.CaptureFixture[str], home: Path, given: dict[str, Any]
) -> str:
    """What `tholos-mlx KIND print` writes for these flags."""
    assert run(kind, "print", home, given) == 0
    return capsys.readouterr().out


def test_the_repositorys_copy_is_the_template_the_module_fills(kind: Kind) -> None:
    assert kind.users_copy.read_text(encoding="utf-8") == kind.module.TEMPLATE, (
        f"{kind.users_copy.relative_to(REPO)} and {kind.name}.TEMPLATE differ: copy one onto the other"
    )


def test_print_without_flags_runs_plain_serve_with_the_home(
    kind: Kind, capsys: pytest.CaptureFixture[str], tholos_home: Path
) -> None:
    argv = kind.argv(printed(kind, capsys, tholos_home, flags()))
    assert argv == [
        os.path.abspath(sys.executable),
        "-m",
        "tholos_mlx",
        "serve",
        "--home",
        str(tholos_home),
    ]


def test_python_m_tholos_mlx_print_writes_the_file_and_creates_nothing(
    kind: Kind, tmp_path: Path
) -> None:
    where = tmp_path / "x"
    done = subprocess.run(
        [sys.executable, "-m", "tholos_mlx", kind.name, "print", "--home", str(where)]
        + ["--port", "9000", "--model", "fast"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert kind.argv(done.stdout) == [
        os.path.abspath(sys.executable),
        "-m",
        "tholos_mlx",
        "serve",
        "--port",
        "9000",
        "--model",
        "fast",
        "--home",
        str(where),
    ]
    assert not where.exists(), "print must not create anything"


def test_install_writes_the_file_atomically(
    kind: Kind,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tholos_home: Path,
) -> None:
    given = flags(port=9000)
    text = printed(kind, capsys, tholos_home, given)
    writes: list[tuple[Path, bytes]] = []
    real = home_module.write_atomic

    def spy(path: Path, data: bytes, mode: int = 0o644) -> None:
        writes.append((path, data))
        real(path, data, mode)

    monkeypatch.setattr("tholos_mlx.service.manager.write_atomic", spy)
    assert run(kind, "install", tholos_home, given, kind.host(tmp_path, kind.fake(), None)) == 0
    target = kind.file(tmp_path)
    assert writes == [(target, text.encode())]
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no temp file left"


def test_install_that_never_gets_healthy_exits_1_in_one_line_pointing_at_the_log(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path, tholos_home: Path
) -> None:
    host = kind.host(tmp_path, kind.fake(), FakeHealth(healthy=False))
    assert run(kind, "install", tholos_home, flags(port=9002), host) == 1
    err = capsys.readouterr().err
    assert "/health" in err and "9002" in err
    assert str(tholos_home / "logs" / "serve.err.log") in err
    assert err.count("\n") == 1


def test_uninstalling_what_was_never_installed_is_fine_and_says_so(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path, tholos_home: Path
) -> None:
    runner = kind.fake()
    assert run(kind, "uninstall", tholos_home, flags(), kind.host(tmp_path, runner, None)) == 0
    assert runner.calls == kind.uninstalled_calls
    assert "not installed" in capsys.readouterr().out


def test_uninstalling_twice_is_fine(
    kind: Kind, capsys: pytest.CaptureFixture[str], tmp_path: Path, tholos_home: Path
) -> None:
    runner = kind.fake()
    host = kind.host(tmp_path, runner, None)
    assert run(kind, "install", tholos_home, flags(), host) == 0
    assert run(kind, "uninstall", tholos_home, flags(), host) == 0
    assert not kind.file(tmp_path).exists()
    runner.calls.clear()
    capsys.readouterr()

    assert run(kind, "uninstall", tholos_home, flags(), host) == 0

    assert runner.calls == kind.uninstalled_calls
    assert "not installed" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["install", "uninstall"])
def test_install_and_uninstall_on_the_other_os_name_the_right_command(
    kind: Kind, action: str, tmp_path: Path, tholos_home: Path
) -> None:
    runner = kind.fake()
    other = Host(
        runner=runner,
        health=FakeHealth(),
        user_home=tmp_path / "user",
        env={},
        macos=kind.name == "systemd",
        uid=501,
    )
    with pytest.raises(UsageError) as caught:
        run(kind, action, tholos_home, flags(), other)
    message = str(caught.value)
    assert kind.os_name in message and kind.other_command in message and "\n" not in message
    assert runner.calls == [] and not (tmp_path / "user").exists()
