"""Fixtures of the bench tests: a tiny random-weight model built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `--synthetic tiny` folder (seed 0) with the tiny model's tokenizer; read-only."""
    from tholos_mlx.bench import synthetic

    folder = tmp_path_factory.mktemp("synthetic") / "synthetic-tiny"
    return synthetic.build("tiny", tiny_folder, folder)
