"""GGUF -> MLX model folder (weights, config, tokenizer, chat template), installed atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tholos_mlx import __version__, tiers
from tholos_mlx.errors import UsageError
from tholos_mlx.gguf import llama, tokenizer
from tholos_mlx.gguf.format import GGUFError, GGUFHeader, printable, read_header
from tholos_mlx.gguf.llama import ROPE_FREQS, mlx_base
from tholos_mlx.home import IMPORT_MARKER, MODELS_DIR

log = logging.getLogger("tholos.gguf")

Progress = Callable[[str, float], None]  # (what is happening, fraction done from 0 to 1)

SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
QUANT_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
ARCHITECTURES = ("llama",)  # Mistral 7B and friends ship as "llama" too
_SHARD_BYTES = 1 << 30
_LOUD_BYTES = 200 * 1000 * 1000  # show progress off a terminal only for files this big


def inspect(src: Path) -> GGUFHeader:
    """Read and check a GGUF file's header: architecture, tensor types and names."""
    try:
        header = read_header(src)
    except GGUFError as exc:
        raise UsageError(f"{src.name}: {exc}") from None
    arch = header.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UsageError(
            f"{src.name}: architecture {arch!r} is not supported; "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    for t in header.tensors:
        name = printable(t.name)
        if t.type_name not in SUPPORTED_TYPES:
            raise UsageError(
                f"tensor {name} has type {t.type_name}; supported: {', '.join(SUPPORTED_TYPES)}"
            )
        if t.name == ROPE_FREQS:
            continue
        if "_exps" in t.name or "ffn_gate_inp" in t.name:
            raise UsageError(f"{src.name}: mixture-of-experts models are not supported ({name})")
        if mlx_base(t.name) is None:
            raise UsageError(f"{src.name}: tensor {name} is not part of a llama model")
    if not any(t.name == "token_embd.weight" for t in header.tensors):
        raise UsageError(f"{src.name}: no token_embd.weight tensor; not a complete model")
    return header


def _save_weights(weights: dict[str, Any], dest: Path, progress: Progress | None) -> None:
    """Write safetensors shards (model.safetensors when one is enough), reporting progress."""
    import mlx.core as mx

    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name in sorted(weights):
        nbytes = int(weights[name].nbytes)
        if shards[-1] and size + nbytes > _SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += nbytes
    total = sum(int(w.nbytes) for w in weights.values()) or 1
    done, index = 0, {}
    for i, shard in enumerate(shards, 1):
        fname = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        )
        mx.save_safetensors(str(dest / fname), shard, metadata={"format": "mlx"})
        index.update({k: fname for k in shard})
        done += sum(int(w.nbytes) for w in shard.values())
        if progress:
            progress("writing weights", done / total)
    if len(shards) > 1:
        body = {"metadata": {"total_size": total}, "weight_map": index}
        (dest / "model.safetensors.index.json").write_text(json.dumps(body, indent=2) + "\n")


def convert(src: Path, dest: Path, progress: Progress | None = None) -> None:
    """Convert a llama-family GGUF file into an MLX model folder at dest (new, or empty)."""
    _convert(src, inspect(src), dest, progress)


def _convert(src: Path, header: GGUFHeader, dest: Path, progress: Progress | None) -> None:
    import mlx.core as mx

    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise UsageError(f"{dest} is not empty")
    if progress:
        progress("reading tensors", 0.0)
    try:
        raw = mx.load(str(src))  # Q4_0/Q4_1/Q8_0 arrive already in MLX's quantized layout
    except (RuntimeError, ValueError, OSError) as exc:
        raise UsageError(f"{src.name}: MLX could not read the tensors ({exc})") from None
    assert isinstance(raw, dict)
    if progress:
        progress("reading tensors", 1.0)
    rope_freqs: list[float] | None = None
    weights: dict[str, Any] = {}
    for name, arr in raw.items():
        stem, suffix = name.rsplit(".", 1)  # suffix: weight, bias, or quantized scales/biases
        if f"{stem}.weight" == ROPE_FREQS:
            values = arr.astype(mx.float32).tolist()
            rope_freqs = (
                [float(x) for x in values if isinstance(x, (int, float))]
                if isinstance(values, list)
                else None
            )
            continue
        weights[f"{mlx_base(stem + ('.bias' if suffix == 'bias' else '.weight'))}.{suffix}"] = arr
    del raw
    bits = {
        str(mlx_base(t.name)): QUANT_BITS[t.type_name]
        for t in header.tensors
        if t.type_name in QUANT_BITS
    }
    config = llama.config(header, bits, rope_freqs)
    _save_weights(weights, dest, progress)
    del weights
    tok, tok_config = tokenizer.build(header.metadata, config["max_position_embeddings"])
    tok.save(str(dest / "tokenizer.json"))
    _write_json(dest / "tokenizer_config.json", tok_config)
    _write_json(dest / "config.json", config)
    _check_loads(dest)
    st = src.stat()
    _write_json(
        dest / IMPORT_MARKER,
        {
            "tool": "tholos-mlx import-gguf",
            "tool_version": __version__,
            "source": src.name,
            "source_size": st.st_size,
            "source_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "architecture": header.get("general.architecture"),
            "name": header.get("general.name"),
            "tensor_types": dict(Counter(t.type_name for t in header.tensors)),
        },
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_loads(folder: Path) -> None:
    """Load model (lazily) and tokenizer as mlx-lm will: a mismatch fails now, not when served."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.utils import load_model

    try:
        load_model(folder, lazy=True)
        load_tokenizer(folder)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise UsageError(
            f"the converted model does not load in mlx-lm: {_first_line(exc)}"
        ) from None


class _Reporter:
    """Progress on stderr: one rewritten line on a terminal, a few plain lines elsewhere."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.shown = -1

    def __call__(self, what: str, fraction: float) -> None:
        pct = int(fraction * 100)
        if self.tty:
            end = "\n" if pct >= 100 else ""
            print(f"\rimport-gguf: {what} {pct:3d}%", end=end, file=sys.stderr, flush=True)
        elif pct // 25 != self.shown // 25 or pct == 100:
            print(f"import-gguf: {what} {pct}%", file=sys.stderr, flush=True)
        self.shown = pct


def _owned(folder: Path) -> bool:
    """Whether a model folder was made by this importer (so --force may replace it)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / IMPORT_MARKER).is_file()


def _check_source(src: Path) -> int:
    try:
        st = src.stat()
    except FileNotFoundError:
        raise UsageError(f"no such file: {src}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror}") from None
    if not src.is_file():
        raise UsageError(f"not a file: {src}")
    if not os.access(src, os.R_OK):
        raise UsageError(f"cannot read {src}: permission denied")
    return st.st_size


def import_command(src: Path, home: Path, model_id: str, tier: str | None, force: bool) -> int:
    """`tholos-mlx import-gguf`: convert into models/ID atomically and add it to tiers.toml."""
    try:
        return _import(src, home, model_id, tier, force)
    except UsageError as exc:
        # Names inside a GGUF file can hold anything; the CLI's message stays one line.
        raise UsageError(printable(str(exc))) from None


def _import(src: Path, home: Path, model_id: str, tier: str | None, force: bool) -> int:
    tiers.check_id(model_id)
    if tier is not None and not tier.strip():
        raise UsageError("--tier must not be empty")
    size = _check_source(src)
    table = tiers.TierTable(home)
    table.check_readable()
    # Without --tier a re-import keeps the tier the model had.
    chosen: str = tier or table.tier_of(model_id) or tiers.UNASSIGNED
    models = home / MODELS_DIR
    dest = models / model_id
    exists = dest.exists() or dest.is_symlink()
    if (exists or table.has(model_id)) and not force:
        raise UsageError(f"model {model_id!r} already exists; add --force to replace it")
    if exists and not _owned(dest):
        raise UsageError(
            f"{dest} was not made by import-gguf (it has no {IMPORT_MARKER}); not replacing it"
        )
    header = inspect(src)  # a bad file fails here, before anything is created
    loud = sys.stderr.isatty() or size > _LOUD_BYTES
    try:
        models.mkdir(parents=True, exist_ok=True)
        _install(
            src,
            header,
            models,
            dest,
            lambda: table.add(model_id, dest, chosen),
            _Reporter(sys.stderr.isatty()) if loud else None,
        )
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise UsageError(f"import failed: {exc.strerror or exc}{where}") from None
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a converter bug must still end as one line, never a traceback
        log.debug("import of %s failed", src, exc_info=True)
        raise UsageError(f"import failed: {type(exc).__name__}: {_first_line(exc)}") from None
    print(f"imported {src.name} as {model_id!r} (tier {chosen}) into {dest}")
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _install(
    src: Path,
    header: GGUFHeader,
    models: Path,
    dest: Path,
    register: Callable[[], None],
    progress: Progress | None,
) -> None:
    """Convert into a hidden temp folder, then swap it in by renames; undo on any failure."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.importing-", dir=models))
    old: Path | None = None
    placed = done = False
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a model folder is as readable as its siblings
        _convert(src, header, tmp, progress)
        if dest.exists() or dest.is_symlink():
            # The old folder is only removed once the new one is in place and registered.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.replaced-", dir=models))
            old.rmdir()
            os.rename(dest, old)
        os.rename(tmp, dest)
        placed = True
        register()
        done = True
    finally:
        if not done:
            if placed:
                shutil.rmtree(dest, ignore_errors=True)
            if old is not None and not (dest.exists() or dest.is_symlink()):
                os.rename(old, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        if done and old is not None:
            shutil.rmtree(old, ignore_errors=True)
