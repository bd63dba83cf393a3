"""The Linux `systemd --user` unit: the unit file from the settings; systemctl (un)install."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from tholos_mlx.config import Settings
from tholos_mlx.errors import UsageError
from tholos_mlx.service import manager
from tholos_mlx.service.manager import Host, Manager

UNIT = "tholos-mlx.service"

# The template lives here, not in a data file, so an installed wheel needs no package data;
# tests keep systemd/tholos-mlx.service (what users read) equal to it.
TEMPLATE = """\
# tholos-mlx as a systemd --user service: the server starts at login and restarts after a crash.
#
# "tholos-mlx systemd print" writes this file with the fields between at-signs filled in for
# this install, quoted for systemd: PYTHON is the interpreter tholos-mlx runs on, SERVE_FLAGS
# are the serve flags given to "systemd install", THOLOS_HOME_ARG and THOLOS_HOME_ENV are the
# state folder, and the logs go to THOLOS_HOME/logs/serve.out.log and serve.err.log.
# "tholos-mlx systemd install" writes it to ~/.config/systemd/user/tholos-mlx.service (or
# under $XDG_CONFIG_HOME), then runs "systemctl --user daemon-reload", "enable" and "restart";
# "tholos-mlx systemd uninstall" runs "disable --now", removes it and reloads.
# To keep the server running while you are logged out: loginctl enable-linger

[Unit]
Description=tholos-mlx: local OpenAI-compatible LLM server on 127.0.0.1

[Service]
ExecStart=@PYTHON@ -m tholos_mlx serve @SERVE_FLAGS@ --home @THOLOS_HOME_ARG@
Environment="THOLOS_HOME=@THOLOS_HOME_ENV@"
Environment=HF_HUB_OFFLINE=1
Restart=on-failure
RestartSec=10
# Exit status 2 is a usage error (a bad flag or config.toml): restarting cannot fix it.
RestartPreventExitStatus=2
# A stop signals this process only: with --hostfile it stops the ranks itself, rank 0 first
# (whatever is left after the stop timeout is killed).
KillMode=mixed
StandardOutput=append:@STDOUT_LOG@
StandardError=append:@STDERR_LOG@

[Install]
WantedBy=default.target
"""

# Words systemd reads back unchanged without quotes (once % and $ are doubled).
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./$-]+")


def exec_word(arg: str) -> str:
    """One ExecStart argument, written so systemd reads back exactly `arg`."""
    # systemd expands %-specifiers and $VARIABLES in ExecStart; doubling is its escape for both.
    text = arg.replace("%", "%%").replace("$", "$$")
    if _BARE.fullmatch(arg):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_value(value: str) -> str:
    """A value inside a double-quoted Environment= assignment (specifiers, but no $VARIABLES)."""
    return value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')


def render(settings: Settings, flags: Mapping[str, Any]) -> str:
    """The unit file for this install: TEMPLATE with its fields filled in, quoted for systemd."""
    python = manager.interpreter()
    if "$" in python:
        # systemd keeps the executable path as written but expands $ in argv[0]: they would differ.
        raise UsageError(f"systemd cannot start a Python whose path holds '$': {python}")
    stdout_log, stderr_log = manager.log_paths(settings.home)
    return manager.fill(
        TEMPLATE,
        {
            "PYTHON": exec_word(python),
            "SERVE_FLAGS": [exec_word(word) for word in manager.flag_argv(flags)],
            "THOLOS_HOME_ARG": exec_word(str(settings.home)),
            "THOLOS_HOME_ENV": env_value(str(settings.home)),
            # append: takes the rest of the line as a path, with specifiers: only % needs escaping.
            "STDOUT_LOG": str(stdout_log).replace("%", "%%"),
            "STDERR_LOG": str(stderr_log).replace("%", "%%"),
        },
    )


def unit_path(host: Host) -> Path:
    """Where the unit goes: $XDG_CONFIG_HOME/systemd/user/, by default under ~/.config."""
    xdg = host.env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME; systemd does too.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else host.user_home / ".config"
    return base / "systemd" / "user" / UNIT


def _systemctl(host: Host, *args: str) -> None:
    manager.run_checked(host, ["systemctl", "--user", *args])


def _load(host: Host, path: Path) -> None:
    """Reload unit files, enable at login, and (re)start."""
    _systemctl(host, "daemon-reload")
    _systemctl(host, "enable", UNIT)
    # restart, not `enable --now`: it starts a stopped unit and restarts a running one, so a
    # reinstall with new flags takes effect.
    _systemctl(host, "restart", UNIT)


def _pid(host: Host) -> int | None:
    """The unit's main process id (systemd says 0 when none runs)."""
    code, output = host.runner(
        ["systemctl", "--user", "show", "--property=MainPID", "--value", UNIT]
    )
    text = output.strip()
    return int(text) if code == 0 and text.isdigit() and int(text) > 0 else None


def _unload(host: Host, path: Path) -> None:
    """Stop and disable the unit; without its file there is nothing systemd could run."""
    if path.exists():
        _systemctl(host, "disable", "--now", UNIT)


MANAGER = Manager(
    job=UNIT,
    supported=lambda host: not host.macos,
    refusal=(
        "systemd install/uninstall is for Linux; on macOS use `tholos-mlx launchd install` "
        "(`tholos-mlx systemd print` works anywhere)"
    ),
    path=unit_path,
    render=render,
    load=_load,
    unload=_unload,
    forget=lambda host: _systemctl(host, "daemon-reload"),
    pid=_pid,
)


def command(
    action: str, settings: Settings, flags: Mapping[str, Any], host: Host | None = None
) -> int:
    """`tholos-mlx systemd install|uninstall|print`; returns the exit status."""
    return manager.command(MANAGER, action, settings, flags, host)
