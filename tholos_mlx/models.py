"""`tholos-mlx models`: list the installed models; add, scan for and remove model folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tholos_mlx import health as health_client
from tholos_mlx import mlx_folder
from tholos_mlx.config import Settings
from tholos_mlx.errors import UsageError
from tholos_mlx.home import IMPORT_MARKER, MODELS_DIR, clear_cache
from tholos_mlx.tiers import UNASSIGNED, TierTable, check_id, folder_size

PROG = "tholos-mlx"


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


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_models(home: Path, settings: Settings) -> int:
    """Print id, tier, folder, size on disk and loaded ("yes", "no", or "-" with no server)."""
    entries = TierTable(home).entries()
    if not entries:
        print(
            f"No models installed in {home}. Add one with `{PROG} import-gguf FILE --id ID`, "
            f"or find the ones already on this machine with `{PROG} models scan`."
        )
        return 0
    found = health_client.find(settings.home, settings.port)
    health = found[1] if found else None
    running = health.get("model") if health else None
    rows = [("ID", "TIER", "FOLDER", "SIZE", "LOADED")]
    for e in entries:
        loaded = ("yes" if e.id == running else "no") if health else "-"
        rows.append((e.id, e.tier, _shown(e.path, home), human_size(folder_size(e.path)), loaded))
    _print_table(rows)
    return 0


# --- add ------------------------------------------------------------------------------------


def _same_folder(a: Path | None, b: Path) -> bool:
    try:
        return a is not None and a.resolve() == b.resolve()
    except OSError:
        return False


def _registration(table: TierTable, folder: Path) -> str | None:
    """The id tiers.toml already gives this folder, if any."""
    for model_id, path in table.taken().items():
        if _same_folder(path, folder):
            return model_id
    return None


def _register(table: TierTable, folder: Path, model_id: str, tier: str) -> None:
    """Refuse (UsageError, tiers.toml untouched) or add the entry; checks before any write."""
    check_id(model_id)
    table.check_readable()
    if not tier.strip():
        raise UsageError("--tier must not be empty")
    problem = mlx_folder.problem(folder)
    if problem:
        raise UsageError(f"{folder}: {problem}")
    # A folder under models/ that tiers.toml does not name is listed by its folder name; adding
    # it writes the entry that gives it an id and a tier of its own.
    loose = {i for i, p in table.taken().items() if not table.has(i) and _same_folder(p, folder)}
    if model_id in table.taken() and model_id not in loose:
        raise UsageError(
            f"model id {model_id!r} is taken; pick another with --id, "
            f"or `{PROG} models remove {model_id}` first"
        )
    already = _registration(table, folder)
    if already is not None and already not in loose:
        raise UsageError(f"{folder} is already registered as {already!r}")
    table.add(model_id, folder, tier)


def add_command(home: Path, path: str, model_id: str, tier: str | None) -> int:
    """`models add PATH --id ID [--tier T]`: register a folder in place, without copying it."""
    folder = Path(os.path.abspath(Path(path).expanduser()))
    _register(TierTable(home), folder, model_id, tier or UNASSIGNED)
    print(f"registered {folder} as {model_id!r} (tier {tier or UNASSIGNED})")
    return 0


# --- scan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A model folder another tool left on this machine."""

    source: str  # "huggingface" or "lmstudio"
    folder: Path
    model_id: str  # the folder's NAME, lower-cased
    problem: str | None  # why mlx-lm could not load it; None: it can


def hf_hub_cache(env: Mapping[str, str]) -> Path:
    """$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def lmstudio_models() -> Path:
    """LM Studio's model folder: ~/.lmstudio/models/ORG/NAME/."""
    return Path.home() / ".lmstudio" / "models"


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _snapshot(repo: Path) -> Path | None:
    """The snapshot refs/main names, else the newest one."""
    snapshots = repo / "snapshots"
    try:
        main = (repo / "refs" / "main").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        main = ""
    if main and "/" not in main and main not in (".", "..") and (snapshots / main).is_dir():
        return snapshots / main
    found = _children(snapshots)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def scan(env: Mapping[str, str]) -> list[Found]:
    """Model folders in the Hugging Face hub cache and in LM Studio's folder, with their ids."""
    out: list[Found] = []
    for repo in _children(hf_hub_cache(env)):
        if not repo.name.startswith("models--"):
            continue  # datasets--, spaces--: not models
        name = repo.name.removeprefix("models--").partition("--")[2] or repo.name
        snapshot = _snapshot(repo)
        if snapshot is not None:
            out.append(Found("huggingface", snapshot, name.lower(), mlx_folder.problem(snapshot)))
    for org in _children(lmstudio_models()):
        for folder in _children(org):
            out.append(Found("lmstudio", folder, folder.name.lower(), mlx_folder.problem(folder)))
    return out


def _status(found: Found, table: TierTable) -> str:
    registered = _registration(table, found.folder)
    if registered is not None:
        return "registered" if registered == found.model_id else f"registered as {registered}"
    if found.problem:
        return "gguf only" if found.problem == mlx_folder.GGUF_ONLY else "not loadable"
    if found.model_id in table.taken():
        return "id taken"
    return "not registered"


def scan_command(home: Path, env: Mapping[str, str], add: bool) -> int:
    """`models scan [--add]`: list what is found; --add registers the loadable ones not yet in."""
    table = TierTable(home)
    found = scan(env)
    if not found:
        print(f"No model folders in {hf_hub_cache(env)} or {lmstudio_models()}.")
        return 0
    rows = [("ID", "STATUS", "SOURCE", "FOLDER")]
    rows += [(f.model_id, _status(f, table), f.source, str(f.folder)) for f in found]
    _print_table(rows)
    for f in found:
        if f.problem:
            print(f"{_status(f, table)}: {f.folder}: {f.problem}")
    if not add:
        new = sum(_status(f, table) == "not registered" for f in found)
        if new:
            print(f"`{PROG} models scan --add` registers the {new} not registered yet.")
        return 0
    table.check_readable()
    for f in found:
        if f.problem or _registration(table, f.folder) is not None:
            continue
        if f.model_id in table.taken():
            print(
                f"skipped {f.folder}: the id {f.model_id!r} is taken; "
                f"`{PROG} models add PATH --id OTHER` registers it under another"
            )
            continue
        try:
            _register(table, f.folder, f.model_id, UNASSIGNED)
        except UsageError as exc:  # a name that is no valid id: skip it, say why, go on
            print(f"skipped {f.folder}: {exc}")
            continue
        print(f"registered {f.folder} as {f.model_id!r}")
    return 0


# --- remove ---------------------------------------------------------------------------------


def _clear_cache_of(home: Path, model_id: str) -> Callable[[], str]:
    """Clears cache/ID/ when called (after the entry is gone); says what it cleared."""

    def clear() -> str:
        try:
            files = clear_cache(home, model_id)
        except ValueError:  # an id that is no folder name has no cache
            return ""
        return (
            f" and its {len(files)} prompt cache file{'s' if len(files) != 1 else ''}"
            if files
            else ""
        )

    return clear


def _deletable(home: Path, folder: Path) -> str | None:
    """Why --delete must not delete this folder, or None: import-gguf made it in models/."""
    models = (home / MODELS_DIR).resolve()
    if folder.is_symlink() or folder.resolve().parent != models:
        return f"{folder} is not inside {home / MODELS_DIR}"
    if not (folder / IMPORT_MARKER).is_file():
        return f"{folder} was not made by import-gguf (it has no {IMPORT_MARKER})"
    return None


def _refuse_if_serving(home: Path, model_id: str, port: int) -> None:
    """A running server would go on answering with a model no longer listed: stop it first."""
    found = health_client.find(home, port)
    if found is None:
        return
    at, health = found
    if model_id in (health.get("model"), health.get("last_model")):
        raise UsageError(
            f"{model_id!r} is the model of the server on 127.0.0.1:{at}, which answers with it "
            "when a request names no model; stop that server (or have it load another model) "
            "first, then remove it"
        )


def remove_command(home: Path, model_id: str, delete: bool, port: int) -> int:
    """`models remove ID [--delete]`: drop the entry and its prompt cache; --delete: what import-gguf made too."""
    table = TierTable(home)
    table.check_readable()
    if table.has(model_id) or model_id in table.taken():
        _refuse_if_serving(home, model_id, port)
    cleared = _clear_cache_of(home, model_id)
    listed = table.has(model_id)
    folder = table.folders().get(model_id) if listed else home / MODELS_DIR / model_id
    if not listed and not (delete and model_id in table.taken()):
        if model_id in table.taken():
            raise UsageError(
                f"{model_id!r} is not in {table.path}: it is listed because its folder is in "
                f"{home / MODELS_DIR}; move that folder out to remove it (--delete deletes only "
                "what import-gguf made)"
            )
        raise UsageError(f"no model {model_id!r} in {table.path}; `{PROG} models` lists them")
    exists = folder is not None and (folder.exists() or folder.is_symlink())
    if not (delete and folder is not None and exists):
        table.remove(model_id)
        kept = "its folder stays" if not delete else "its folder was already gone"
        print(f"removed {model_id!r} from {table.path}{cleared()}; {kept}")
        return 0
    why = _deletable(home, folder)
    if why:
        raise UsageError(f"not deleting: {why}; without --delete only the entry goes")
    # Move it aside first (one rename), so a failure to write tiers.toml can put it back.
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.removing-", dir=folder.parent))
    aside.rmdir()
    os.rename(folder, aside)
    try:
        if listed:
            table.remove(model_id)
    except BaseException:
        os.rename(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    print(f"removed {model_id!r}{cleared()} and deleted {folder}")
    return 0
