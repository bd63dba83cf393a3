"""What a result records of where it was measured: the machine, the software, the model."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TypedDict

from tholos_mlx import machine
from tholos_mlx.bench.results import Machine, ModelInfo, Software
from tholos_mlx.tiers import ModelEntry


class Environment(TypedDict):
    """The head of every result."""

    date: str
    machine: Machine
    software: Software


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            check=False,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(mlx_device: str) -> Environment:
    """The machine and software a result was measured on, so results can be laid side by side."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    memory = machine.total_memory_bytes()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "chip": machine.chip_name(),
            "memory_bytes": memory,
            "memory_gib": round(memory / 2**30, 1),
            "os": machine.os_name(),
            "arch": platform.machine(),
            "cpu_count": os.cpu_count() or 0,
            "mlx_device": mlx_device,
        },
        "software": {
            "python": platform.python_version(),
            "mlx": _version("mlx"),
            "mlx-lm": _version("mlx-lm"),
            "tholos-mlx": _version("tholos-mlx"),
            "git_commit": commit or "unknown",
            "git_dirty": bool(status),
        },
    }


def model_info(entry: ModelEntry) -> ModelInfo:
    """What a result records of the model: id, tier, size, quantization, context."""
    weights = sum(p.stat().st_size for p in entry.path.glob("*.safetensors"))
    try:
        config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    quant = config.get("quantization") or {}
    return {
        "id": entry.id,
        "tier": entry.tier,
        "folder": entry.path.name,
        "model_type": config.get("model_type"),
        "weights_bytes": weights,
        "weights_mib": weights / 2**20,
        "quantization_bits": quant.get("bits"),
        "context": config.get("max_position_embeddings"),
        "synthetic": config.get("synthetic"),
    }
