"""launchd.py (and the manager.py parts it shares with systemd.py), all runnable on Linux."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest

from tests.service.fakes import FakeClock, FakeHealth, flags, settings_for
from tholos_mlx import home as home_module
from tholos_mlx.cli import build_parser, serve_flags
from tholos_mlx.errors import UsageError
from tholos_mlx.service import launchd
from tholos_mlx.service.manager import Host

REPO = Path(__file__).resolve().parents[2]
TARGET = "gui/501/ai.tholos.mlx"


@pytest.fixture
def home(tholos_home: Path) -> Path:
    """The temp THOLOS_HOME the conftest gives every test."""
    return tholos_home


def run(action: str, home: Path, given: dict[str, Any], host: Host | None = None) -> int:
    """`tholos-mlx launchd ACTION` with these flags, called the way cli.py calls it."""
    return launchd.command(action, settings_for(home, given), given, host)


class FakeLaunchctl:
    """launchctl as install/uninstall see it: a table of loaded jobs, and every call recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.loaded: dict[str, str] = {}  # target -> the plist text launchd read
        self.fail: dict[str, tuple[int, str]] = {}  # verb -> answer, whatever the state
        self.pid: int | None = 4242  # what `launchctl print` shows of a loaded job's process

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        assert argv[0] == "launchctl"
        verb = argv[1]
        if verb in self.fail:
            return self.fail[verb]
        if verb == "bootstrap":
            text = Path(argv[3]).read_text(encoding="utf-8")
            target = f"{argv[2]}/{plistlib.loads(text.encode())['Label']}"
            if target in self.loaded:
                return 5, "Bootstrap failed: 5: Input/output error"
            self.loaded[target] = text
            return 0, ""
        if verb == "bootout":
            if self.loaded.pop(argv[2], None) is None:
                return 3, "Boot-out failed: 3: No such process"
            return 0, ""
        if verb in ("print", "kickstart"):
            if argv[2] in self.loaded:
                if verb == "print":
                    return 0, launchctl_print(argv[2], self.pid)
                return 0, ""
            return 113, 'Could not find service "ai.tholos.mlx" in domain for user gui: 501'
        raise AssertionError(f"unexpected launchctl call {argv}")


def launchctl_print(target: str, pid: int | None) -> str:
    """What `launchctl print` says of a loaded job (abridged), running or not."""
    running = f"\tstate = running\n\tpid = {pid}\n" if pid else "\tstate = not running\n"
    return (
        f"{target} = {{\n\tactive count = 1\n\tpath = /Users/me/Library/LaunchAgents/x.plist\n"
        f"{running}\tprogram = /usr/bin/python3\n\tlast exit code = (never exited)\n}}\n"
    )


def mac(
    tmp_path: Path,
    runner: FakeLaunchctl,
    health: FakeHealth | None = None,
    clock: FakeClock | None = None,
) -> Host:
    """A pretend Mac whose user home is a temp folder, so the real ~/Library is never touched."""
    clock = clock or FakeClock()
    return Host(
        runner=runner,
        health=health or FakeHealth(),
        user_home=tmp_path / "user",
        env={},
        macos=True,
        uid=501,
        clock=clock,
        sleep=clock.sleep,
    )


def agent_file(tmp_path: Path) -> Path:
    """The LaunchAgent path inside the pretend user home."""
    return tmp_path / "user" / "Library" / "LaunchAgents" / "ai.tholos.mlx.plist"


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


def test_print_without_flags_runs_plain_serve_with_the_home(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    plist = plistlib.loads(printed(capsys, home, flags()).encode())
    assert plist["ProgramArguments"][1:] == ["-m", "tholos_mlx", "serve", "--home", str(home)]


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


def test_the_launchd_folder_holds_the_template_the_module_fills() -> None:
    users_copy = (REPO / "launchd" / "ai.tholos.mlx.plist").read_text(encoding="utf-8")
    assert users_copy == launchd.TEMPLATE, (
        "launchd/ai.tholos.mlx.plist and launchd.TEMPLATE differ: copy one onto the other"
    )


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


def test_python_m_tholos_mlx_launchd_print_writes_a_parsable_plist(tmp_path: Path) -> None:
    where = tmp_path / "x"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tholos_mlx",
            "launchd",
            "print",
            "--home",
            str(where),
            "--port",
            "9000",
            "--model",
            "fast",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    plist = plistlib.loads(done.stdout.encode())
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
        str(where),
    ]
    assert plist["EnvironmentVariables"]["THOLOS_HOME"] == str(where)
    assert not where.exists(), "print must not create anything"


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


def test_install_writes_the_plist_atomically(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path
) -> None:
    given = flags(port=9000)
    text = printed(capsys, home, given)
    writes: list[tuple[Path, bytes]] = []
    real = home_module.write_atomic

    def spy(path: Path, data: bytes, mode: int = 0o644) -> None:
        writes.append((path, data))
        real(path, data, mode)

    monkeypatch.setattr("tholos_mlx.service.manager.write_atomic", spy)
    assert run("install", home, given, mac(tmp_path, FakeLaunchctl())) == 0
    assert writes == [(agent_file(tmp_path), text.encode())]
    assert [p.name for p in agent_file(tmp_path).parent.iterdir()] == ["ai.tholos.mlx.plist"], (
        "no temp file left"
    )


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


def test_uninstalling_twice_is_fine(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    host = mac(tmp_path, runner)
    run("install", home, flags(), host)
    assert run("uninstall", home, flags(), host) == 0
    runner.calls.clear()

    assert run("uninstall", home, flags(), host) == 0

    # bootout says "No such process"; launchctl print confirms the job is not loaded: fine.
    assert runner.calls == [["launchctl", "bootout", TARGET], ["launchctl", "print", TARGET]]
    assert "not installed" in capsys.readouterr().out


def test_uninstall_without_ever_installing_is_fine(tmp_path: Path, home: Path) -> None:
    host = mac(tmp_path, FakeLaunchctl())
    assert run("uninstall", home, flags(), host) == 0


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


def test_install_that_never_gets_healthy_exits_1_and_points_at_the_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path
) -> None:
    host = mac(tmp_path, FakeLaunchctl(), FakeHealth(healthy=False))
    assert run("install", home, flags(port=9002), host) == 1
    err = capsys.readouterr().err
    assert "/health" in err and "9002" in err
    assert str(home / "logs" / "serve.err.log") in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("action", ["install", "uninstall"])
def test_install_and_uninstall_on_linux_say_it_is_for_macos(
    action: str, tmp_path: Path, home: Path
) -> None:
    runner = FakeLaunchctl()
    linux = Host(
        runner=runner,
        health=FakeHealth(),
        user_home=tmp_path / "user",
        env={},
        macos=False,
        uid=1000,
    )
    with pytest.raises(UsageError) as caught:
        run(action, home, flags(), linux)
    message = str(caught.value)
    assert "macOS" in message and "tholos-mlx systemd install" in message and "\n" not in message
    assert runner.calls == [] and not (tmp_path / "user").exists()


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
