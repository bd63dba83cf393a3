"""What the launchd and systemd tests share: serve flags as the CLI hands them, fake /health,
a fake clock (waiting for a server never takes real time), fake launchctl and systemctl on a
pretend Mac and Linux box, and readers of the files they print."""

from __future__ import annotations

import plistlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from tholos_mlx import config
from tholos_mlx.config import SERVE_FLAGS, Settings
from tholos_mlx.service.manager import Host

LAUNCHD_TARGET = "gui/501/ai.tholos.mlx"
UNIT = "tholos-mlx.service"


def flags(**given: Any) -> dict[str, Any]:
    """The serve flags as cli.serve_flags hands them over: None for each one not given."""
    return {**dict.fromkeys(SERVE_FLAGS), **given}


def settings_for(home: Path, given: dict[str, Any]) -> Settings:
    """Settings the way the CLI builds them."""
    return config.build(home, given)


class FakeHealth:
    """A /health probe that answers at once and remembers what it was asked."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.calls: list[tuple[int, str]] = []

    def __call__(self, port: int, key: str) -> bool:
        self.calls.append((port, key))
        return self.healthy


class FakeClock:
    """time.monotonic and time.sleep on pretend time; `on_sleep` runs after each sleep."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


# --- launchd on a pretend Mac ---------------------------------------------------------------


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


# --- systemd on a pretend Linux box ----------------------------------------------------------


class FakeSystemctl:
    """`systemctl --user` that succeeds (unless told otherwise) and records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: dict[str, tuple[int, str]] = {}  # verb -> answer
        self.pid = 0  # the unit's MainPID: 0 when nothing runs

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        assert list(argv[:2]) == ["systemctl", "--user"]
        if argv[2] == "show" and argv[2] not in self.fail:
            assert list(argv[3:]) == ["--property=MainPID", "--value", UNIT]
            return 0, f"{self.pid}\n"
        return self.fail.get(argv[2], (0, ""))


def linux(
    tmp_path: Path,
    runner: FakeSystemctl,
    health: FakeHealth | None = None,
    env: dict[str, str] | None = None,
) -> Host:
    """A pretend Linux box whose user home is a temp folder, so the real ~/.config is untouched."""
    clock = FakeClock()
    return Host(
        runner=runner,
        health=health or FakeHealth(),
        user_home=tmp_path / "user",
        env={} if env is None else env,
        macos=False,
        uid=1000,
        clock=clock,
        sleep=clock.sleep,
    )


def unit_file(tmp_path: Path) -> Path:
    """The unit's path inside the pretend user home."""
    return tmp_path / "user" / ".config" / "systemd" / "user" / UNIT


def entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each setting of a unit file, in order."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def value(text: str, section: str, key: str) -> list[str]:
    """Every value a key has in a section (Environment= may repeat)."""
    return [v for s, k, v in entries(text) if (s, k) == (section, key)]


def systemd_words(line: str) -> list[str]:
    """Split a command line as systemd does: quotes and backslashes, then %% and $$ undoubled."""
    words: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        chars: list[str] = []
        quoted = False
        while i < len(line) and (quoted or line[i] != " "):
            if line[i] == "\\":
                chars.append(line[i + 1])
                i += 2
            elif line[i] == '"':
                quoted = not quoted
                i += 1
            else:
                chars.append(line[i])
                i += 1
        words.append("".join(chars).replace("%%", "%").replace("$$", "$"))
    return words
