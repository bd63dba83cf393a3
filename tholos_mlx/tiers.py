"""The tier table: tiers.toml and the folders under models/, as OpenAI model ids."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tholos_mlx.errors import ModelNotFound, UsageError
from tholos_mlx.home import MODELS_DIR, TIERS_FILE, write_atomic

log = logging.getLogger("tholos.tiers")

UNASSIGNED = "unassigned"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ModelEntry:
    """One installed model: its OpenAI id, its tier and its folder."""

    id: str
    tier: str
    path: Path


def check_id(model_id: str) -> str:
    """A model id usable as a folder name; UsageError otherwise."""
    if not _ID.match(model_id) or model_id in (".", ".."):
        raise UsageError(
            f"invalid model id {model_id!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    return model_id


def _readable(folder: Path) -> bool:
    try:
        return (folder / "config.json").is_file() and any(folder.iterdir())
    except OSError:
        return False


def folder_size(folder: Path) -> int:
    """Bytes on disk of every file below a folder."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


class TierTable:
    """Reads tiers.toml afresh on each call, so a new import shows without a restart."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / TIERS_FILE
        self._reported: frozenset[str] = frozenset()

    def _raw(self) -> dict[str, dict[str, object]]:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            log.error("%s is not valid TOML, ignoring it: %s", self.path, exc)
            return {}
        except OSError as exc:  # a folder in its place, no permission: report, never crash
            log.error("cannot read %s, ignoring it: %s", self.path, exc.strerror)
            return {}
        models = data.get("models", {})
        return models if isinstance(models, dict) else {}

    def _folder(self, value: object) -> Path | None:
        if not isinstance(value, str) or not value:
            return None
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/...": an unreadable entry, left out
            return None
        return p if p.is_absolute() else self.home / p

    def entries(self) -> list[ModelEntry]:
        """Installed models: table entries in file order, then unlisted folders by name."""
        out: list[ModelEntry] = []
        missing: list[str] = []
        seen_folders: set[Path] = set()
        for model_id, spec in self._raw().items():
            if not isinstance(spec, dict):
                missing.append(model_id)
                continue
            folder = self._folder(spec.get("path", f"{MODELS_DIR}/{model_id}"))
            tier = spec.get("tier", UNASSIGNED)
            if folder is None or not isinstance(tier, str) or not _readable(folder):
                missing.append(model_id)
                continue
            out.append(ModelEntry(model_id, tier, folder))
            seen_folders.add(folder.resolve())
        out += self._loose({e.id for e in out} | set(missing), seen_folders)
        self._report(missing)
        return out

    def _loose(self, taken: set[str], seen_folders: set[Path]) -> list[ModelEntry]:
        """Model folders under models/ that tiers.toml does not name, by folder name."""
        try:
            children = sorted((self.home / MODELS_DIR).iterdir())
        except OSError:
            children = []
        return [
            ModelEntry(child.name, UNASSIGNED, child)
            for child in children
            if not child.name.startswith(".")
            and child.name not in taken
            and child.resolve() not in seen_folders
            and _readable(child)
        ]

    def _report(self, missing: list[str]) -> None:
        now = frozenset(missing)
        if now != self._reported:
            for model_id in sorted(now - self._reported):
                log.warning(
                    "model %r in %s: folder missing or unreadable; left out", model_id, self.path
                )
            self._reported = now

    def resolve(self, name: str) -> ModelEntry:
        """A model id, or a tier name (its first installed model in file order)."""
        entries = self.entries()
        for e in entries:
            if e.id == name:
                return e
        for e in entries:
            if e.tier == name:
                return e
        raise self.not_found(name)

    @staticmethod
    def not_found(name: str) -> ModelNotFound:
        """The 404 for a model id or tier that is not installed."""
        return ModelNotFound(
            f"The model `{name}` does not exist. GET /v1/models lists the installed ids and tiers.",
            param="model",
        )

    def tier_of(self, model_id: str) -> str | None:
        """The tier tiers.toml gives this id (whatever state its folder is in), if any."""
        spec = self._raw().get(model_id)
        tier = spec.get("tier") if isinstance(spec, dict) else None
        return tier if isinstance(tier, str) else None

    def folders(self) -> dict[str, Path | None]:
        """Every id tiers.toml names, with its folder whatever state it is in (None: unreadable)."""
        out: dict[str, Path | None] = {}
        for model_id, spec in self._raw().items():
            path = spec.get("path", f"{MODELS_DIR}/{model_id}") if isinstance(spec, dict) else None
            out[model_id] = self._folder(path)
        return out

    def taken(self) -> dict[str, Path | None]:
        """Every id in use, with its folder: tiers.toml's entries and the loose folders."""
        named = self.folders()
        seen = {f.resolve() for f in named.values() if f is not None}
        return {**named, **{e.id: e.path for e in self._loose(set(named), seen)}}

    def has(self, model_id: str) -> bool:
        """Whether tiers.toml names this id (whatever state its folder is in)."""
        return model_id in self._raw()

    def check_readable(self) -> None:
        """UsageError if tiers.toml exists but cannot be parsed (so nothing overwrites it)."""
        try:
            tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{self.path} is not valid TOML ({exc}); fix or remove it first"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot read {self.path}: {exc.strerror}") from None

    def add(self, model_id: str, folder: Path, tier: str) -> None:
        """Add or replace an entry, writing tiers.toml atomically."""
        self.check_readable()
        try:
            rel = folder.relative_to(self.home).as_posix()
        except ValueError:
            rel = str(folder)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = _HEADER
        raw = self._raw()
        block = f"\n[models.{_key(model_id)}]\npath = {_str(rel)}\ntier = {_str(tier)}\n"
        if model_id in raw:
            raw[model_id] = {**raw[model_id], "path": rel, "tier": tier}
            text = "".join(_block(k, v) for k, v in raw.items()).lstrip("\n")
            text = _HEADER + text
        else:
            text = text.rstrip("\n") + "\n" + block
        tomllib.loads(text)  # never write a file we could not read back
        write_atomic(self.path, text.encode("utf-8"))

    def remove(self, model_id: str) -> None:
        """Remove an entry, writing tiers.toml atomically; comments and the other entries stay."""
        self.check_readable()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        data = tomllib.loads(text)
        models = data.get("models")
        if not isinstance(models, dict) or model_id not in models:
            raise UsageError(f"{self.path} has no entry {model_id!r}")
        rest = {k: v for k, v in models.items() if k != model_id}
        # The last entry gone leaves no [models] table at all: the file reads back as {}.
        want = (
            {**data, "models": rest} if rest else {k: v for k, v in data.items() if k != "models"}
        )
        new = _without_section(text, model_id)
        if new is None or tomllib.loads(new) != want:
            # Written in a shape the line edit does not understand: regenerate, if nothing is lost.
            if set(data) != {"models"} or not all(isinstance(v, dict) for v in models.values()):
                raise UsageError(
                    f"cannot remove {model_id!r} from {self.path} without losing other content; "
                    "edit it by hand"
                )
            new = _HEADER + "".join(_block(k, v) for k, v in rest.items()).lstrip("\n")
            if tomllib.loads(new) != want:  # a value _block cannot write (an array, a table)
                raise UsageError(f"cannot rewrite {self.path}; edit it by hand")
        write_atomic(self.path, new.encode("utf-8"))


_HEADER = "# tholos-mlx tier table: OpenAI model id -> installed model folder and tier\n"
_TABLE_LINE = re.compile(r"^\s*\[\[?(?P<name>[^\]]*)\]\]?\s*(?:#.*)?$")


def _without_section(text: str, model_id: str) -> str | None:
    """tiers.toml's text without the [models.ID] section, or None if it has no such header."""
    keep: list[str] = []
    pending: list[str] = []  # comments after the section: they may belong to the next header
    found, skipping = False, False
    for line in text.splitlines(keepends=True):
        header = _TABLE_LINE.match(line)
        if header:
            keep += pending
            pending = []
            skipping = _is_models_key(header.group("name"), model_id)
            found = found or skipping
        if not skipping:
            keep.append(line)
        elif not line.strip() or line.lstrip().startswith("#"):
            pending.append(line)
        else:
            pending = []
    if not found:
        return None
    return re.sub(r"\n{3,}", "\n\n", "".join(keep)).rstrip("\n") + "\n"


def _is_models_key(name: str, model_id: str) -> bool:
    """Whether a table header's name is models.ID, in any of the spellings TOML allows."""
    try:
        parsed = tomllib.loads(f"[{name}]\n")
    except tomllib.TOMLDecodeError:
        return False
    inner = parsed.get("models")
    return isinstance(inner, dict) and list(inner) == [model_id] and inner[model_id] == {}


def _str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _str(key)


def _block(model_id: str, spec: dict[str, object]) -> str:
    lines = [f"\n[models.{_key(model_id)}]"]
    for k, v in spec.items():
        if isinstance(v, str):
            lines.append(f"{_key(k)} = {_str(v)}")
        elif isinstance(v, bool):
            lines.append(f"{_key(k)} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{_key(k)} = {v}")
    return "\n".join(lines) + "\n"
