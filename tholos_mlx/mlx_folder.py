"""Whether mlx-lm can load a model folder, told from its files alone (MLX is never imported)."""

from __future__ import annotations

import ast
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

# What mlx_lm.utils.load_model globs for; anything else (weights.safetensors, *.bin) it ignores.
WEIGHTS = "model*.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
_REMAPS = ("MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING")
GGUF_ONLY = "GGUF files, not MLX weights: `tholos-mlx import-gguf FILE --id ID` converts one"


def problem(folder: Path) -> str | None:
    """Why mlx-lm could not load this folder (one line), or None when it could."""
    if not folder.is_dir():
        return "no such folder"
    gguf = _has(folder, "*.gguf")
    if not (folder / "config.json").is_file():
        if gguf:
            return GGUF_ONLY
        return "no config.json: not an MLX model folder"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "config.json is not valid JSON"
    if not isinstance(config, dict):
        return "config.json is not a JSON object"
    weights = sorted(folder.glob(WEIGHTS))
    if not weights:
        return GGUF_ONLY if gguf else f"no weights ({WEIGHTS})"
    broken = [w.name for w in weights if not w.is_file()]
    if broken:
        return f"weights file {broken[0]} is missing (a broken link: an unfinished download?)"
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return "config.json names no model_type"
    if supported_module(config) is None:
        return f"model_type {model_type!r} is not supported by the installed mlx-lm"
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not _has(
        folder, "*.tiktoken"
    ):
        return f"no tokenizer ({', '.join(TOKENIZER_FILES[:3])})"
    return None


def _has(folder: Path, pattern: str) -> bool:
    return any(True for _ in folder.glob(pattern))


def supported_module(config: dict[str, Any]) -> str | None:
    """The mlx_lm.models module mlx-lm would build this config with, if it has one."""
    root = _mlx_lm_root()
    if root is None:
        return None
    model_type = str(config.get("model_type"))
    by_type, by_arch = _remappings(root)
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    # The same order as mlx_lm.utils._get_classes: an architecture remap first, then the type's.
    name = next(
        (by_arch[(model_type, a)] for a in architectures if (model_type, a) in by_arch),
        by_type.get(model_type, model_type),
    )
    if not name.isidentifier():
        return None
    try:
        source = (root / "models" / f"{name}.py").read_text(encoding="utf-8")
    except OSError:
        return None
    # models/ also holds helpers (base.py, cache.py): a model module defines both classes.
    return name if "class Model(" in source and "class ModelArgs(" in source else None


@cache
def _mlx_lm_root() -> Path | None:
    """The installed mlx_lm package folder, found without importing it (it imports MLX)."""
    spec = importlib.util.find_spec("mlx_lm")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


@cache
def _remappings(root: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """mlx-lm's model_type remapping tables, read from its source; imported if that fails."""
    found: dict[str, Any] = {}
    try:
        tree = ast.parse((root / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in _REMAPS:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    if not isinstance(found.get(_REMAPS[0]), dict):
        # A newer mlx-lm that builds the table otherwise: ask it (this imports MLX, once).
        from mlx_lm import utils

        found = {name: getattr(utils, name, {}) for name in _REMAPS}
    by_arch = found.get(_REMAPS[1])
    return dict(found[_REMAPS[0]]), dict(by_arch) if isinstance(by_arch, dict) else {}
