"""The prompt cache on disk: KV prefixes kept under THOLOS_HOME/cache/ID/ across restarts.

One safetensors file per entry, written by mlx-lm's save_prompt_cache (its metadata: the token
ids and the weights' fingerprint), atomically and mode 0600. A file's name starts with the
fingerprint, so a changed model never reads it; all files together stay within a byte budget,
the least recently used (oldest mtime) out first. Used only on the engine thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import load_prompt_cache, save_prompt_cache

from tholos_mlx.prompt_cache import cache_bytes, cache_tokens, kv_prefix

log = logging.getLogger("tholos.cache")

_MiB = 1 << 20
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # one plain path component
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{32})\.safetensors$")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0  # a temp file this old is left over from a crash, not a write in progress

Entry = tuple[tuple[int, ...], list[Any]]
"""A prompt cache entry: the tokens its KV cache holds, and the per-layer cache."""


def fingerprint(folder: Path, kv_bits: int | None) -> str:
    """What identifies a model's weights, cheaply, and the KV format its caches were made in.

    Per weight file: name, size, mtime and its first and last MiB; config.json whole. Reading
    every byte of a 40 GB model would take a minute; this catches a replaced, re-quantized or
    re-downloaded model, and a copy (new mtime) only costs a cold cache.
    """
    h = hashlib.sha256(f"tholos prompt cache 1; kv_bits={kv_bits}\n".encode())
    for path in [*sorted(folder.glob("*.safetensors")), folder / "config.json"]:
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        with path.open("rb") as f:
            h.update(f.read(_MiB))
            if st.st_size > _MiB:
                f.seek(max(_MiB, st.st_size - _MiB))
                h.update(f.read(_MiB))
    return h.hexdigest()


def _file_name(fp: str, tokens: Sequence[int]) -> str:
    key = hashlib.sha256(fp.encode() + b"\0" + json.dumps(list(tokens)).encode()).hexdigest()
    return f"{fp[:16]}-{key[:32]}.safetensors"


def _compact(cache: list[Any]) -> list[Any]:
    """The cache without the unused room MLX grows KV buffers by (up to 255 tokens a layer)."""
    return [kv_prefix(c, c.offset) or c for c in cache]


class DiskCache:
    """Saves and restores one model's prompt cache entries under root/ID/, within a budget."""

    def __init__(self, root: Path, budget_bytes: int, part: str | None = None) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        # A rank's part of a split model keeps its files in root/ID/PART/: ranks sharing one
        # home (one machine) would otherwise each take the others' files for stale ones.
        self.part = part
        self._known: dict[str, set[str]] = {}  # per model: our files that mirror memory

    def restore(self, model_id: str, fp: str, budget_bytes: int) -> list[Entry]:
        """The entries saved for this model and fingerprint, newest within budget, oldest first."""
        folder = self._folder(model_id)
        if folder is None:
            return []
        files: list[tuple[float, int, Path]] = []
        for path in self._ours(folder):
            match = _NAME.match(path.name)
            assert match is not None
            if match.group(1) != fp[:16]:
                self._unlink(path)  # made with other weights: can never be used again
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        files.sort(reverse=True)
        chosen: list[Path] = []
        total = 0
        for _, size, path in files:
            if total + size > budget_bytes:
                continue
            total += size
            chosen.append(path)
        entries: list[Entry] = []
        for path in reversed(chosen):
            entry = self._read(path, fp)
            if entry is not None:
                entries.append(entry)
        self._known[model_id] = {p.name for p in chosen}
        if entries:
            log.info("%s: %d prompt caches restored from disk", model_id, len(entries))
        return entries

    def save(
        self, model_id: str, fp: str, entries: Sequence[Entry], deadline: float | None = None
    ) -> int:
        """Mirror these entries (oldest first) to disk, newest first until the deadline; return how many."""
        folder = self._folder(model_id)
        if folder is None:
            return 0
        names = [_file_name(fp, tokens) for tokens, _ in entries]
        base = time.time_ns()
        saved = 0
        for i in reversed(range(len(entries))):
            if deadline is not None and time.monotonic() > deadline:
                log.warning("%s: prompt cache save stopped at the shutdown deadline", model_id)
                break
            tokens, cache = entries[i]
            cache = _compact(cache)
            if cache_bytes(cache) > self.budget_bytes:
                continue
            path = folder / names[i]
            stamp = base - (len(entries) - 1 - i) * 1000  # mtime order = recency order
            try:
                if not path.exists():
                    self._write(path, fp, model_id, tokens, cache)
                os.utime(path, ns=(stamp, stamp))
                saved += 1
            except Exception as exc:  # a full disk, a cache type mlx-lm cannot save
                log.warning("%s: prompt cache not saved: %s: %s", model_id, type(exc).__name__, exc)
        for gone in self._known.get(model_id, set()) - set(names):
            self._unlink(folder / gone)  # dropped from memory since: stale on disk too
        self._known[model_id] = set(names)
        self._evict()
        if saved:
            log.info("%s: %d prompt caches saved to disk", model_id, saved)
        return saved

    def _folder(self, model_id: str) -> Path | None:
        """root/ID/, for an id that is one plain path component (tiers.toml is hand-editable)."""
        if not _SAFE_ID.match(model_id):
            log.warning("model id %r cannot name a cache folder: no disk prompt cache", model_id)
            return None
        return self.root / model_id / self.part if self.part else self.root / model_id

    def _write(
        self, path: Path, fp: str, model_id: str, tokens: Sequence[int], cache: list[Any]
    ) -> None:
        """Write one entry to a 0600 temp file beside its place, then move it there."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.part:
            path.parent.parent.mkdir(mode=0o700, exist_ok=True)  # ID/, above this rank's PART/
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}.safetensors"
        # Created 0600 first: mlx writes into the existing file, which keeps its mode.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            meta = {"tokens": json.dumps(list(tokens)), "fingerprint": fp, "model": model_id}
            save_prompt_cache(str(tmp), cache, meta)
            os.chmod(tmp, 0o600)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            self._unlink(tmp)
            raise

    def _read(self, path: Path, fp: str) -> Entry | None:
        try:
            cache, meta = load_prompt_cache(str(path), return_metadata=True)  # type: ignore[no-untyped-call]
            tokens = tuple(int(t) for t in json.loads(meta["tokens"]))
            if meta.get("fingerprint") != fp or cache_tokens(cache) != len(tokens) or not tokens:
                raise ValueError("does not match its model")
        except Exception as exc:  # truncated, or written by something else: ours to drop
            log.warning("dropping unreadable prompt cache %s: %s", path.name, type(exc).__name__)
            self._unlink(path)
            return None
        return tokens, cache

    def _ours(self, folder: Path) -> list[Path]:
        """The cache files in a model's folder; temp files left by a crash are removed."""
        try:
            children = list(folder.iterdir())
        except OSError:
            return []
        out = []
        for path in children:
            if _NAME.match(path.name):
                out.append(path)
            elif path.name.startswith(_TMP_PREFIX) and path.name.endswith(".safetensors"):
                try:
                    if time.time() - path.stat().st_mtime > _STALE_TMP_S:
                        self._unlink(path)
                except OSError:
                    pass
        return out

    def _evict(self) -> None:
        """Delete the least recently used files, across every model, until within budget."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
            folders += [p for f in folders for p in f.iterdir() if p.is_dir()]  # ranks' parts
        except OSError:
            return
        files: list[tuple[float, int, Path]] = []
        for folder in folders:
            for path in self._ours(folder):
                try:
                    st = path.stat()
                except OSError:
                    continue
                files.append((st.st_mtime, st.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.budget_bytes:
                break
            self._unlink(path)
            total -= size

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete %s: %s", path, exc.strerror)
