"""systemd.py: the `systemd --user` unit with a fake systemctl; what it does alike with launchd is in
test_manager.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import (
    UNIT,
    FakeHealth,
    FakeSystemctl,
    flags,
    linux,
    settings_for,
    systemd_words,
    unit_file,
    value,
)
from tholos_mlx.errors import UsageError
from tholos_mlx.service import systemd
from tholos_mlx.service.manager import Host

REPO = Path(__file__).resolve().parents[2]
AWKWARD = 'it\'s "R&D" 100% $HOME \\ back;slash'  # everything systemd would otherwise rewrite


@pytest.fixture
def home(tholos_home: Path) -> Path:
    """The temp THOLOS_HOME the conftest gives every test."""
    return tholos_home


def run(action: str, home: Path, given: dict[str, Any], host: Host | None = None) -> int:
    """`tholos-mlx systemd ACTION` with these flags, called the way cli.py calls it."""
    return systemd.command(action, settings_for(home, given), given, host)


def printed(capsys: pytest.CaptureFixture[str], home: Path, given: dict[str, Any]) -> str:
    """What `tholos-mlx systemd print` writes for these flags."""
    assert run("print", home, given) == 0
    return capsys.readouterr().out


# --- print ---------------------------------------------------------------------------------


def test_print_writes_a_user_unit_with_every_required_setting(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    text = printed(capsys, home, flags(port=9000, model="fast"))
    assert systemd_words(value(text, "Service", "ExecStart")[0]) == [
        os.path.abspath(sys.executable),
        "-m",
        "tholos_mlx",
        "serve",
        "--port",
        "9000",
        "--model",
        "fast",
        "--home",
        str(home),
    ]
    assert value(text, "Service", "Environment") == [f'"THOLOS_HOME={home}"', "HF_HUB_OFFLINE=1"]
    assert value(text, "Service", "Restart") == ["on-failure"]
    assert value(text, "Service", "RestartSec") == ["10"]
    assert value(text, "Service", "RestartPreventExitStatus") == ["2"], "never retry a bad flag"
    assert value(text, "Service", "StandardOutput") == [f"append:{home}/logs/serve.out.log"]
    assert value(text, "Service", "StandardError") == [f"append:{home}/logs/serve.err.log"]
    assert value(text, "Install", "WantedBy") == ["default.target"]


def test_exec_start_without_flags_has_no_empty_word(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    exec_start = value(printed(capsys, home, flags()), "Service", "ExecStart")[0]
    assert "  " not in exec_start  # where @SERVE_FLAGS@ stood


def test_the_printed_unit_is_the_template_with_its_fields_filled_in(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    template = (REPO / "systemd" / UNIT).read_text(encoding="utf-8")
    expected = (
        template.replace("@PYTHON@", os.path.abspath(sys.executable))
        .replace("@SERVE_FLAGS@", "--port 9000 --model fast")
        .replace("@THOLOS_HOME_ARG@", str(home))
        .replace("@THOLOS_HOME_ENV@", str(home))
        .replace("@STDOUT_LOG@", f"{home}/logs/serve.out.log")
        .replace("@STDERR_LOG@", f"{home}/logs/serve.err.log")
    )
    assert printed(capsys, home, flags(port=9000, model="fast")) == expected


def test_awkward_values_are_quoted_so_systemd_reads_them_back_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = tmp_path / AWKWARD
    text = printed(capsys, odd, flags(model=AWKWARD, allow_origins=("-x",)))
    words = systemd_words(value(text, "Service", "ExecStart")[0])
    assert words[4:] == ["--model", AWKWARD, "--allow-origin=-x", "--home", str(odd)]
    [env] = [systemd_words(v)[0] for v in value(text, "Service", "Environment") if "THOLOS" in v]
    assert env == f"THOLOS_HOME={odd}"


@pytest.mark.skipif(
    not (shutil.which("systemd-analyze") and shutil.which("bash")),
    reason="needs systemd-analyze and bash",
)
def test_systemd_itself_reads_awkward_values_back_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = tmp_path / AWKWARD
    folder = tmp_path / "units"
    folder.mkdir()
    (folder / UNIT).write_text(printed(capsys, odd, flags(model=AWKWARD)), encoding="utf-8")
    # At debug level `verify` dumps the unit as systemd parsed it (systemd 252).
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"./{UNIT}"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"},
    )
    dump: dict[str, str] = {}
    for line in (done.stdout + done.stderr).splitlines():
        name, _, rest = line.strip().partition(": ")
        if name in ("Command Line", "StandardErrorFileToAppend") or rest.startswith("THOLOS_HOME="):
            dump[name] = rest
    if "Command Line" not in dump:
        pytest.skip(f"this systemd-analyze does not dump parsed units: {done.stderr[-300:]}")
    # The dump shows argv quoted for a POSIX shell (shlex misreads \$), before $$ becomes $.
    words = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + dump["Command Line"]],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")[:-1]
    argv = [w.replace("$$", "$") for w in words]
    assert argv[4:] == ["--model", AWKWARD, "--home", str(odd)]
    assert dump["Environment"] == f"THOLOS_HOME={odd}"
    assert dump["StandardErrorFileToAppend"] == str(odd / "logs" / "serve.err.log")


def test_a_python_path_with_a_dollar_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "$odd" / "python"))
    with pytest.raises(UsageError, match=r"\$"):
        run("print", home, flags())


# --- install / uninstall -------------------------------------------------------------------


def test_unit_path_honours_xdg_config_home(tmp_path: Path) -> None:
    runner = FakeSystemctl()
    assert systemd.unit_path(linux(tmp_path, runner)) == unit_file(tmp_path)
    xdg = tmp_path / "xdg"
    assert systemd.unit_path(linux(tmp_path, runner, env={"XDG_CONFIG_HOME": str(xdg)})) == (
        xdg / "systemd" / "user" / UNIT
    )
    # The XDG spec says a relative value is to be ignored.
    relative = linux(tmp_path, runner, env={"XDG_CONFIG_HOME": "rel"})
    assert systemd.unit_path(relative) == unit_file(tmp_path)


def test_install_reloads_enables_and_restarts_the_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    given = flags(port=9000, model="fast")
    text = printed(capsys, home, given)
    runner, health = FakeSystemctl(), FakeHealth()

    assert run("install", home, given, linux(tmp_path, runner, health)) == 0

    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", UNIT],
        ["systemctl", "--user", "restart", UNIT],
    ]
    assert unit_file(tmp_path).read_text(encoding="utf-8") == text
    key = (home / "api_key").read_text().strip()
    assert health.calls == [(9000, key)]
    assert (home / "logs").is_dir()
    assert str(unit_file(tmp_path)) in capsys.readouterr().out


def test_installing_twice_restarts_with_the_new_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeSystemctl()
    host = linux(tmp_path, runner)
    first, second = flags(port=9000), flags(port=9001)
    assert run("install", home, first, host) == 0
    assert run("install", home, second, host) == 0
    assert runner.calls[3:] == runner.calls[:3]
    assert "--port 9001" in unit_file(tmp_path).read_text(encoding="utf-8")


def test_uninstall_disables_stops_removes_and_reloads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeSystemctl()
    host = linux(tmp_path, runner)
    run("install", home, flags(), host)
    runner.calls.clear()

    assert run("uninstall", home, flags(), host) == 0

    assert runner.calls == [
        ["systemctl", "--user", "disable", "--now", UNIT],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not unit_file(tmp_path).exists()


def test_a_failing_systemctl_is_one_line_with_its_message(tmp_path: Path, home: Path) -> None:
    runner = FakeSystemctl()
    runner.fail["daemon-reload"] = (1, "Failed to connect to bus:\nNo medium found")
    health = FakeHealth()

    with pytest.raises(UsageError) as caught:
        run("install", home, flags(), linux(tmp_path, runner, health))

    assert str(caught.value) == (
        "`systemctl --user daemon-reload` failed: Failed to connect to bus: No medium found"
    )
    assert health.calls == []


def test_systemctl_show_gives_the_main_pid_of_a_running_unit_only(tmp_path: Path) -> None:
    runner = FakeSystemctl()
    host = linux(tmp_path, runner)
    assert systemd.MANAGER.pid(host) is None, "MainPID 0: nothing runs"
    runner.pid = 4321
    assert systemd.MANAGER.pid(host) == 4321
    runner.fail["show"] = (1, "Failed to connect to bus")
    assert systemd.MANAGER.pid(host) is None
