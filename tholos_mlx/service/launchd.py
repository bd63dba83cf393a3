"""The macOS LaunchAgent: the plist from the settings, and launchctl install/uninstall."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping
from xml.sax.saxutils import escape

from tholos_mlx.config import Settings
from tholos_mlx.service import manager
from tholos_mlx.service.manager import Host, Manager

LABEL = "ai.tholos.mlx"
BOOTOUT_WAIT_S = 10.0  # bootout returns before the job is gone; bootstrap too soon fails with 5

# The template lives here, not in a data file, so an installed wheel needs no package data;
# tests keep launchd/ai.tholos.mlx.plist (what users read) equal to it.
TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  tholos-mlx as a macOS LaunchAgent: the server starts at login and restarts after a crash.

  "tholos-mlx launchd print" writes this file with the fields between at-signs filled in
  for this install: PYTHON is the interpreter tholos-mlx runs on, SERVE_FLAGS are the serve
  flags given to "launchd install" (one string each), THOLOS_HOME is the state folder, and
  the logs go to THOLOS_HOME/logs/serve.out.log and serve.err.log.
  "tholos-mlx launchd install" writes it to ~/Library/LaunchAgents/ai.tholos.mlx.plist and
  loads it with "launchctl bootstrap gui/UID" and "launchctl kickstart gui/UID/ai.tholos.mlx";
  "tholos-mlx launchd uninstall" boots it out and removes it.
  KeepAlive Crashed: launchd restarts the server only when a signal killed it (a crash), never
  after it exits, so a bad flag or config.toml (exit status 2) is not retried every 10 s.
-->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>ai.tholos.mlx</string>
	<key>ProgramArguments</key>
	<array>
		<string>@PYTHON@</string>
		<string>-m</string>
		<string>tholos_mlx</string>
		<string>serve</string>
		@SERVE_FLAGS@
		<string>--home</string>
		<string>@THOLOS_HOME@</string>
	</array>
	<key>EnvironmentVariables</key>
	<dict>
		<key>THOLOS_HOME</key>
		<string>@THOLOS_HOME@</string>
		<key>HF_HUB_OFFLINE</key>
		<string>1</string>
	</dict>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>Crashed</key>
		<true/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<key>ProcessType</key>
	<string>Interactive</string>
	<key>StandardOutPath</key>
	<string>@STDOUT_LOG@</string>
	<key>StandardErrorPath</key>
	<string>@STDERR_LOG@</string>
</dict>
</plist>
"""


def render(settings: Settings, flags: Mapping[str, Any]) -> str:
    """The LaunchAgent plist for this install: TEMPLATE with its fields filled in, XML-escaped."""
    stdout_log, stderr_log = manager.log_paths(settings.home)
    return manager.fill(
        TEMPLATE,
        {
            "PYTHON": escape(manager.interpreter()),
            "SERVE_FLAGS": [f"<string>{escape(w)}</string>" for w in manager.flag_argv(flags)],
            "THOLOS_HOME": escape(str(settings.home)),
            "STDOUT_LOG": escape(str(stdout_log)),
            "STDERR_LOG": escape(str(stderr_log)),
        },
    )


def agent_path(host: Host) -> Path:
    """Where the LaunchAgent goes: ~/Library/LaunchAgents/ai.tholos.mlx.plist."""
    return host.user_home / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def _domain(host: Host) -> str:
    return f"gui/{host.uid}"


def _loaded(host: Host) -> bool:
    """Whether launchd knows the job now (`launchctl print` fails for an unknown one)."""
    code, _ = host.runner(["launchctl", "print", f"{_domain(host)}/{LABEL}"])
    return code == 0


def _bootout(host: Host) -> None:
    """Unload the job and wait until it is gone; a job that was not loaded is fine."""
    argv = ["launchctl", "bootout", f"{_domain(host)}/{LABEL}"]
    code, output = host.runner(argv)
    # Ask launchd for the state instead of reading its message, which changes between releases.
    if code != 0 and _loaded(host):
        raise manager.failure(argv, code, output)
    deadline = time.monotonic() + BOOTOUT_WAIT_S
    while code == 0 and _loaded(host):
        if time.monotonic() >= deadline:
            raise manager.failure(argv, 1, f"{LABEL} still loaded after {BOOTOUT_WAIT_S:.0f} s")
        time.sleep(0.2)


_PID = re.compile(r"^\s*pid = (\d+)\s*$", re.MULTILINE)


def _pid(host: Host) -> int | None:
    """The job's process id, from `launchctl print` (which shows `pid = N` while it runs)."""
    code, output = host.runner(["launchctl", "print", f"{_domain(host)}/{LABEL}"])
    found = _PID.search(output) if code == 0 else None
    return int(found.group(1)) if found else None


def _load(host: Host, path: Path) -> None:
    """bootstrap, then kickstart: a job bootstrapped mid-session can stay pending until kicked."""
    bootstrap = ["launchctl", "bootstrap", _domain(host), str(path)]
    code, output = host.runner(bootstrap)
    if code != 0:
        if not _loaded(host):
            raise manager.failure(bootstrap, code, output)
        # Loaded by an earlier install: launchd keeps the plist it read, so unload it and load
        # the new one, or new flags would not apply.
        _bootout(host)
        manager.run_checked(host, bootstrap)
    manager.run_checked(host, ["launchctl", "kickstart", f"{_domain(host)}/{LABEL}"])


MANAGER = Manager(
    job=LABEL,
    supported=lambda host: host.macos,
    refusal=(
        "launchd install/uninstall is for macOS; on Linux use `tholos-mlx systemd install` "
        "(`tholos-mlx launchd print` works anywhere)"
    ),
    path=agent_path,
    render=render,
    load=_load,
    unload=lambda host, path: _bootout(host),
    forget=lambda host: None,
    pid=_pid,
)


def command(
    action: str, settings: Settings, flags: Mapping[str, Any], host: Host | None = None
) -> int:
    """`tholos-mlx launchd install|uninstall|print`; returns the exit status."""
    return manager.command(MANAGER, action, settings, flags, host)
