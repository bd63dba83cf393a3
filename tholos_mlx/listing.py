"""`tholos-mlx models`: the installed models as a table, with what a running server has loaded."""

from __future__ import annotations

from pathlib import Path

from tholos_mlx import health as health_client
from tholos_mlx.config import Settings
from tholos_mlx.tiers import TierTable, folder_size


def human_size(n: int) -> str:
    """Bytes as a short human figure (MB/GB, powers of 1024)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _shown(folder: Path, home: Path) -> str:
    try:
        return folder.relative_to(home).as_posix()
    except ValueError:
        return str(folder)


def print_models(home: Path, settings: Settings) -> int:
    """Print id, tier, folder, size on disk and loaded ("yes", "no", or "-" with no server)."""
    entries = TierTable(home).entries()
    if not entries:
        print(f"No models installed in {home}. Add one with `tholos-mlx import-gguf FILE --id ID`.")
        return 0
    health = health_client.of_home(settings.home, settings.port)
    running = health.get("model") if health else None
    rows = [("ID", "TIER", "FOLDER", "SIZE", "LOADED")]
    for e in entries:
        loaded = ("yes" if e.id == running else "no") if health else "-"
        rows.append((e.id, e.tier, _shown(e.path, home), human_size(folder_size(e.path)), loaded))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
