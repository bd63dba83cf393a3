"""What launchd.py and systemd.py share: install, uninstall and print, the serve argv, templates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tholos_mlx import health, machine
from tholos_mlx.config import SERVE_SETTINGS, Settings
from tholos_mlx.errors import UsageError
from tholos_mlx.home import LOGS_DIR, ensure_key, write_atomic
from tholos_mlx.service import startup

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs one launchctl/systemctl command line; returns (exit status, stdout and stderr as text)."""

HealthProbe = Callable[[int, str], bool]
"""(port, key) -> whether GET http://127.0.0.1:PORT/health answers 200 to the key now."""

STDOUT_LOG = "serve.out.log"
STDERR_LOG = "serve.err.log"  # the server logs to stderr, so this is the log worth reading

_FIELD = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_INLINE = re.compile(r"( ?)@([A-Z][A-Z0-9_]*)@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Host:
    """The machine outside THOLOS_HOME that install/uninstall touch; tests pass a fake one."""

    runner: Runner
    health: HealthProbe
    user_home: Path
    env: Mapping[str, str]
    macos: bool
    uid: int
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def current(cls) -> Host:
        """This machine: real launchctl/systemctl, real /health, the real user home."""
        return cls(
            runner=run_process,
            health=probe_health,
            user_home=Path.home(),
            env=dict(os.environ),
            macos=machine.is_macos(),
            uid=os.getuid(),
        )


@dataclass(frozen=True)
class Manager:
    """One service manager (launchd or systemd): where its file goes and how it is (un)loaded."""

    job: str  # the label or unit name the manager knows the server by
    supported: Callable[[Host], bool]
    refusal: str  # the one line printed on the wrong OS
    path: Callable[[Host], Path]  # where the service file is installed
    render: Callable[[Settings, Mapping[str, Any]], str]
    load: Callable[[Host, Path], None]  # after the file is written: (re)start the server
    unload: Callable[[Host, Path], None]  # before the file is removed: stop the server
    forget: Callable[[Host], None]  # after the file is removed
    pid: Callable[[Host], int | None]  # the server's process id while the manager runs it


def interpreter() -> str:
    """The absolute path of the Python running now, for the service to start again."""
    if not sys.executable:
        raise UsageError("cannot tell which Python is running (sys.executable is empty)")
    # abspath, not resolve(): a virtualenv's python is a symlink whose own path selects the venv.
    return os.path.abspath(sys.executable)


def flag_argv(flags: Mapping[str, Any]) -> list[str]:
    """The serve flags the user gave (None = not given), turned back into command-line words."""
    words: list[str] = []
    for setting in SERVE_SETTINGS:
        value = flags.get(setting.name)
        if value is None or value is False:
            continue
        if setting.kind.action == "store_true":
            words.append(setting.flag)
            continue
        for item in value if setting.kind.action == "append" else (value,):
            text = setting.kind.to_text(item)
            # argparse would read a value starting with "-" as an option: glue it on with "=".
            words += [f"{setting.flag}={text}"] if text.startswith("-") else [setting.flag, text]
    return words


def log_paths(home: Path) -> tuple[Path, Path]:
    """Where the service's stdout and stderr go."""
    return home / LOGS_DIR / STDOUT_LOG, home / LOGS_DIR / STDERR_LOG


def fill(template: str, fields: Mapping[str, str | Sequence[str]]) -> str:
    """The template with each @NAME@ replaced by its value, which the caller has escaped."""
    # A list alone on its line becomes one line per item at that indentation (none if empty);
    # inside a line its items are joined by spaces.
    for value in fields.values():
        for item in [value] if isinstance(value, str) else value:
            if _CONTROL.search(item):
                raise UsageError(f"{item!r} holds a control character; a service file cannot")

    def inline(match: re.Match[str]) -> str:
        space, value = match.group(1), fields[match.group(2)]  # KeyError: a field nobody fills
        if isinstance(value, str):
            return space + value
        return space + " ".join(value) if value else ""  # no double space for an empty list

    lines: list[str] = []
    for line in template.splitlines(keepends=True):
        alone = _FIELD.fullmatch(line.strip())
        value = fields.get(alone.group(1), "") if alone else ""
        if alone and not isinstance(value, str):
            indent = line[: len(line) - len(line.lstrip())]
            lines += [f"{indent}{item}\n" for item in value]
        else:
            lines.append(_INLINE.sub(inline, line))
    return "".join(lines)


def run_process(argv: Sequence[str]) -> tuple[int, str]:
    """The real runner: run argv, return its exit status and output (a missing tool is 127)."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
    except OSError as exc:
        return 127, f"{argv[0]}: {exc.strerror or exc}"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not finish within 60 s"
    return done.returncode, (done.stdout + done.stderr).strip()


def run_checked(host: Host, argv: Sequence[str]) -> None:
    """Run argv through the host's runner; a failure becomes one line naming the command."""
    code, output = host.runner(argv)
    if code != 0:
        raise failure(argv, code, output)


def failure(argv: Sequence[str], code: int, output: str) -> UsageError:
    """The one-line error for a launchctl/systemctl call that failed."""
    said = " ".join(output.split()) or f"exit status {code}"
    return UsageError(f"`{' '.join(argv)}` failed: {said}")


def probe_health(port: int, key: str) -> bool:
    """One GET /health: refused, reset, or a 401 from an older server going down all say no."""
    return health.fetch(port, key, timeout=5.0) is not None


def command(
    manager: Manager,
    action: str,
    settings: Settings,
    flags: Mapping[str, Any],
    host: Host | None,
) -> int:
    """`tholos-mlx launchd|systemd install|uninstall|print`; returns the exit status."""
    if action == "print":
        sys.stdout.write(manager.render(settings, flags))
        return 0
    if action not in ("install", "uninstall"):
        raise UsageError(f"unknown action {action!r}: use install, uninstall or print")
    host = Host.current() if host is None else host
    if not manager.supported(host):
        raise UsageError(manager.refusal)
    if action == "install":
        return install(manager, settings, flags, host)
    return uninstall(manager, host)


def install(manager: Manager, settings: Settings, flags: Mapping[str, Any], host: Host) -> int:
    """Write the service file atomically, (re)start the server, and wait while it starts."""
    text = manager.render(settings, flags)
    key = ensure_key(settings.home)  # the server would make one anyway; we need it for /health
    stderr_log = log_paths(settings.home)[1]
    stderr_log.parent.mkdir(parents=True, exist_ok=True)  # neither manager creates the folder
    path = manager.path(host)
    write_atomic(path, text.encode("utf-8"))
    manager.load(host, path)
    why = startup.wait_until_serving(
        startup.Watch(
            healthy=lambda: host.health(settings.port, key),
            pid=lambda: manager.pid(host),
            log=stderr_log,
            clock=host.clock,
            sleep=host.sleep,
        )
    )
    if why is not None:
        last = startup.last_line(stderr_log)
        print(
            f"tholos-mlx: installed {path}, but GET /health on 127.0.0.1:{settings.port} did not "
            f"answer: {why}; see {stderr_log}" + (f" (its last line: {last})" if last else ""),
            file=sys.stderr,
        )
        return 1
    print(
        f"installed {path}; {manager.job} serves http://127.0.0.1:{settings.port}/v1 "
        f"(logs in {stderr_log.parent})"
    )
    return 0


def uninstall(manager: Manager, host: Host) -> int:
    """Stop the server and remove the service file; doing it twice is fine."""
    path = manager.path(host)
    manager.unload(host, path)
    if path.exists():
        path.unlink()
        manager.forget(host)
        print(f"stopped {manager.job} and removed {path}")
    else:
        print(f"{manager.job} is not installed ({path} does not exist)")
    return 0
