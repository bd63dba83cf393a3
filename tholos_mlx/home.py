"""THOLOS_HOME: where all state lives, atomic file writes, the API key, clearing the cache."""

from __future__ import annotations

import hmac
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

KEY_FILE = "api_key"
MODELS_DIR = "models"
TIERS_FILE = "tiers.toml"
CONFIG_FILE = "config.toml"
LOGS_DIR = "logs"
CACHE_DIR = "cache"  # the disk prompt cache: cache/ID/ (a rank's part of a model: cache/ID/PART/)
IMPORT_MARKER = "tholos_import.json"  # in a model folder import-gguf made: its provenance


def default_home(env: dict[str, str] | None = None, platform: str | None = None) -> Path:
    """The home folder when neither --home nor THOLOS_HOME is given."""
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    user_home = Path(env.get("HOME") or Path.home())
    if platform == "darwin":
        return user_home / "Library" / "Application Support" / "Tholos"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else user_home / ".local" / "share"
    return base / "tholos"


def resolve_home(flag: str | None = None, env: dict[str, str] | None = None) -> Path:
    """--home wins over $THOLOS_HOME, which wins over the platform default."""
    env = dict(os.environ) if env is None else env
    if flag:
        return Path(flag).expanduser().absolute()
    if env.get("THOLOS_HOME"):
        return Path(env["THOLOS_HOME"]).expanduser().absolute()
    return default_home(env).absolute()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so readers see the old or the new content, never a half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def clear_cache(home: Path, model_id: str | None = None) -> list[Path]:
    """Delete cache/ID/ (or everything in cache/); returns the files deleted, never outside it."""
    cache = home / CACHE_DIR
    if model_id is not None and (
        not model_id or model_id.startswith(".") or "/" in model_id or os.sep in model_id
    ):
        raise ValueError(f"not a model id: {model_id!r}")
    try:
        targets = [cache / model_id] if model_id is not None else sorted(cache.iterdir())
    except FileNotFoundError:
        return []
    deleted: list[Path] = []
    for target in targets:
        if target.is_symlink() or target.is_file():
            target.unlink()  # a link is removed, never followed
            deleted.append(target)
        elif target.is_dir():
            files = _files_in(target)  # a model's folder holds one file per cached prompt
            shutil.rmtree(target)
            deleted.extend(files)
    return deleted


def _files_in(folder: Path) -> list[Path]:
    """Every file and link under FOLDER, links never followed."""
    out: list[Path] = []
    for parent, dirs, files in os.walk(folder):
        out += [Path(parent, d) for d in dirs if Path(parent, d).is_symlink()]
        out += [Path(parent, f) for f in files]
    return out


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe."""
    return "tholos-" + secrets.token_urlsafe(32)


def ensure_key(home: Path) -> str:
    """The key, created (mode 0600) on first need."""
    path = home / KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    return rotate_key(home)


def rotate_key(home: Path) -> str:
    """Replace the key with a new one and return it."""
    key = new_key()
    write_atomic(home / KEY_FILE, (key + "\n").encode(), mode=0o600)
    return key


class KeyStore:
    """The key as a running server sees it: re-read when the file changes."""

    def __init__(self, home: Path) -> None:
        self._path = home / KEY_FILE
        self._stamp: tuple[int, int] | None = None
        self._key = ensure_key(home).encode()
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            key = self._path.read_text(encoding="utf-8").strip()
            if key:
                self._key = key.encode()
                self._stamp = stamp

    def matches(self, presented: str) -> bool:
        """Compare a presented key to the current one in constant time."""
        self._refresh()
        try:
            raw = presented.encode()
        except UnicodeEncodeError:  # undecodable header bytes: certainly not our key
            return False
        return hmac.compare_digest(raw, self._key)
