"""Everything that differs between macOS and Linux, in one small place."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def is_macos() -> bool:
    """Whether this is a Mac (launchd, sysctl, Metal)."""
    return sys.platform == "darwin"


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def chip_name() -> str:
    """The chip: `machdep.cpu.brand_string` on macOS, the CPU model name on Linux."""
    if is_macos():
        return _sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown Mac"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def total_memory_bytes() -> int:
    """Physical memory of this machine, in bytes (0 if it cannot be read)."""
    if is_macos():
        value = _sysctl("hw.memsize")
        return int(value) if value and value.isdigit() else 0
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def os_name() -> str:
    """A human-readable OS name and version."""
    if is_macos():
        return f"macOS {platform.mac_ver()[0]}"
    return f"{platform.system()} {platform.release()}"


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), in bytes; 0 if unknown."""
    pid = os.getpid() if pid is None else pid
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    try:
        out = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
        return int(out.stdout.strip()) * 1024
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0
