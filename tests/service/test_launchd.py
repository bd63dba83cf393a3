"""launchd.py, all runnable on Linux; what it does alike with systemd is in test_manager.py."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.service.fakes import (
    LAUNCHD_TARGET,
    FakeClock,
    FakeHealth,
    FakeLaunchctl,
    agent_file,
    flags,
    mac,
    settings_for,
)
from tholos_mlx.cli import build_parser, serve_flags
from tholos_mlx.errors import UsageError
from tholos_mlx.service import launchd
from tholos_mlx.service.manager import Host

REPO = Path(__file__).resolve().parents[2]
TARGET = LAUNCHD_TARGET


@pytest.fixture
def home(tholos_home: Path) -> Path:
    """The temp THOLOS_HOME the conftest gives every test."""
    return tholos_home


def run(action: str, home: Path, given: dict[str, Any], host: Host | None = None) -> int:
    """`tholos-mlx launchd ACTION` with these flags, called the way cli.py calls it."""
    return launchd.command(action, settings_for(home, given), given, host)


def printed(capsys: pytest.CaptureFixture[str], home: Path, given: dict[str, Any]) -> str:
    """What `tholos-mlx launchd print` writes for these flags."""
    assert run("print", home, given) == 0
    return capsys.readouterr().out


# --- print ---------------------------------------------------------------------------------


def test_print_writes_a_plist_with_every_required_key(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    plist = plistlib.loads(printed(capsys, home, flags(port=9000, model="fast")).encode())
    assert plist["Label"] == "ai.tholos.mlx"
    assert plist["ProgramArguments"] == [
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
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["EnvironmentVariables"] == {"THOLOS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"Crashed": True}, "restart on a crash, never on exit 2"
    assert plist["ThrottleInterval"] == 10
    assert plist["ProcessType"] == "Interactive"
    assert plist["StandardOutPath"] == str(home / "logs" / "serve.out.log")
    assert plist["StandardErrorPath"] == str(home / "logs" / "serve.err.log")


def test_print_gives_every_serve_flag_back_to_serve(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    given = flags(
        port=8800,
        model="smart",
        queue_timeout=2.5,
        max_queue=0,
        allow_origins=("https://a.example", "-odd"),
        log_prompts=True,
        prompt_cache_mb=0,
        idle_unload=5400.0,
        memory_limit=12.5,
        kv_bits=8,
        disk_cache_gb=0.0,
    )
    args = plistlib.loads(printed(capsys, home, given).encode())["ProgramArguments"]
    assert args[4:-2] == [
        "--port",
        "8800",
        "--model",
        "smart",
        "--queue-timeout",
        "2.5",
        "--max-queue",
        "0",
        "--allow-origin",
        "https://a.example",
        "--allow-origin=-odd",
        "--log-prompts",
        "--prompt-cache-mb",
        "0",
        "--idle-unload",
        "90m",
        "--memory-limit",
        "12.5",
        "--kv-bits",
        "8",
        "--disk-cache-gb",
        "0.0",
    ]
    # The words read back through the real parser give the very same flags.
    assert serve_flags(build_parser().parse_args(["serve", *args[4:-2]])) == given


def test_flags_from_config_toml_stay_in_config_toml(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    # The service reads config.toml each time it starts, so editing it must still take effect.
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text("port = 9100\n")
    args = plistlib.loads(printed(capsys, home, flags()).encode())["ProgramArguments"]
    assert "--port" not in args


def test_the_printed_plist_is_the_template_with_its_fields_filled_in(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    template = (REPO / "launchd" / "ai.tholos.mlx.plist").read_text(encoding="utf-8")
    words = ("--port", "9000", "--model", "fast")
    flag_lines = "".join(f"\t\t<string>{w}</string>\n" for w in words)
    expected = (
        template.replace("@PYTHON@", os.path.abspath(sys.executable))
        .replace("\t\t@SERVE_FLAGS@\n", flag_lines)
        .replace("@STDOUT_LOG@", f"{home}/logs/serve.out.log")
        .replace("@STDERR_LOG@", f"{home}/logs/serve.err.log")
        .replace("@THOLOS_HOME@", str(home))
    )
    assert printed(capsys, home, flags(port=9000, model="fast")) == expected


def test_a_home_with_xml_special_characters_still_gives_a_valid_plist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = tmp_path / "R&D <models> \"quoted\" 'x' ]]>"
    plist = plistlib.loads(printed(capsys, odd, flags(model="a&b<c>")).encode())
    assert plist["ProgramArguments"][-3:] == ["a&b<c>", "--home", str(odd)]
    assert plist["EnvironmentVariables"]["THOLOS_HOME"] == str(odd)
    assert plist["StandardErrorPath"] == str(odd / "logs" / "serve.err.log")


def test_a_control_character_in_a_value_is_refused_in_one_line(home: Path) -> None:
    given = flags(model="bad\nname")
    with pytest.raises(UsageError, match="control character") as caught:
        run("print", home, given)
    assert "\n" not in str(caught.value).replace("\\n", "")


# --- install / uninstall -------------------------------------------------------------------


def test_install_bootstraps_then_kickstarts_in_the_gui_domain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    given = flags(port=9000, model="fast")
    text = printed(capsys, home, given)
    runner, health = FakeLaunchctl(), FakeHealth()
    host = mac(tmp_path, runner, health)
    path = agent_file(tmp_path)

    assert run("install", home, given, host) == 0

    assert runner.calls == [
        ["launchctl", "bootstrap", "gui/501", str(path)],
        ["launchctl", "kickstart", TARGET],
    ]
    assert path.read_text(encoding="utf-8") == text
    assert runner.loaded[TARGET] == text, "launchd must read the finished plist"
    key = (home / "api_key").read_text().strip()
    assert health.calls == [(9000, key)]
    assert (home / "logs").is_dir()
    assert str(path) in capsys.readouterr().out


def test_installing_twice_reloads_the_agent_with_the_new_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    host = mac(tmp_path, runner)
    first, second = flags(port=9000), flags(port=9001)
    assert run("install", home, first, host) == 0
    runner.calls.clear()

    assert run("install", home, second, host) == 0

    path = str(agent_file(tmp_path))
    assert runner.calls == [
        ["launchctl", "bootstrap", "gui/501", path],  # refused: still loaded
        ["launchctl", "print", TARGET],
        ["launchctl", "bootout", TARGET],
        ["launchctl", "print", TARGET],  # gone now
        ["launchctl", "bootstrap", "gui/501", path],
        ["launchctl", "kickstart", TARGET],
    ]
    assert "<string>9001</string>" in runner.loaded[TARGET]


def test_uninstall_boots_the_agent_out_and_removes_the_plist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    host = mac(tmp_path, runner)
    assert run("install", home, flags(), host) == 0
    runner.calls.clear()

    assert run("uninstall", home, flags(), host) == 0

    assert runner.calls == [["launchctl", "bootout", TARGET], ["launchctl", "print", TARGET]]
    assert not agent_file(tmp_path).exists()
    assert runner.loaded == {}


def test_a_bootout_that_leaves_the_job_loaded_fails_with_launchctls_message(
    tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    host = mac(tmp_path, runner)
    run("install", home, flags(), host)
    runner.fail["bootout"] = (1, "Boot-out failed: 1: Operation not permitted")

    with pytest.raises(UsageError) as caught:
        run("uninstall", home, flags(), host)

    message = str(caught.value)
    assert "launchctl bootout" in message and "Operation not permitted" in message
    assert "\n" not in message
    assert agent_file(tmp_path).exists(), "keep the file while the job still runs from it"


def test_a_failing_bootstrap_is_one_line_with_launchctls_message(
    tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    runner.fail["bootstrap"] = (
        125,
        "Bootstrap failed: 125:\nDomain does not support specified action",
    )
    health = FakeHealth()

    with pytest.raises(UsageError) as caught:
        run("install", home, flags(), mac(tmp_path, runner, health))

    assert str(caught.value) == (
        f"`launchctl bootstrap gui/501 {agent_file(tmp_path)}` failed: "
        "Bootstrap failed: 125: Domain does not support specified action"
    )
    assert health.calls == [], "no point waiting for a server that was never started"


@pytest.mark.skipif(sys.platform == "darwin", reason="on a Mac this would really install")
def test_the_cli_refuses_launchd_install_on_linux_in_one_line_with_status_2(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tholos_mlx", "launchd", "install", "--home", str(tmp_path / "h")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "macOS" in done.stderr
    assert done.stdout == ""


def test_an_unknown_action_is_a_usage_error(home: Path) -> None:
    with pytest.raises(UsageError, match="install, uninstall or print"):
        run("reload", home, flags())


# --- waiting for the server after install ---------------------------------------------------


def test_install_waits_through_a_long_load_while_the_server_logs_progress(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    log = home / "logs" / "serve.err.log"
    health = FakeHealth(healthy=False)

    def loading(now: float) -> None:  # a 10-minute load that says "still loading" every 15 s
        if now % 15 == 0:
            with log.open("a") as f:
                f.write(f"INFO tholos.serve: still loading big ({now:.0f} s)\n")
        health.healthy = now >= 600

    clock = FakeClock(loading)
    assert run("install", home, flags(), mac(tmp_path, FakeLaunchctl(), health, clock)) == 0
    assert clock.now == 600, "waited as long as it loaded, not a fixed minute"


def test_install_stops_waiting_once_the_server_exits_and_shows_its_last_log_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    log = home / "logs" / "serve.err.log"

    def exits(now: float) -> None:  # a bad config.toml: the server says why and exits 2
        if now == 1:
            log.write_text("tholos-mlx: error: config.toml: port must be of type int\n")
            runner.pid = None

    clock = FakeClock(exits)
    host = mac(tmp_path, runner, FakeHealth(healthy=False), clock)
    assert run("install", home, flags(), host) == 1
    err = capsys.readouterr().err
    assert "the server exited" in err and "port must be of type int" in err
    assert err.count("\n") == 1
    assert clock.now < 2, "no waiting for a server that is gone"


def test_launchctl_print_gives_the_pid_of_a_running_job_only(tmp_path: Path) -> None:
    runner = FakeLaunchctl()
    host = mac(tmp_path, runner)
    assert launchd.MANAGER.pid(host) is None, "not loaded"
    runner.loaded[TARGET] = ""
    assert launchd.MANAGER.pid(host) == 4242
    runner.pid = None
    assert launchd.MANAGER.pid(host) is None, "loaded, not running"
