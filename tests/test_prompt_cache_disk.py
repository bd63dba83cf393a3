"""Unit tests of tholos_mlx.prompt_cache_disk with small real mlx-lm KV caches (no model)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from tholos_mlx.prompt_cache import cache_tokens
from tholos_mlx.prompt_cache_disk import DiskCache, fingerprint

LAYERS = 2
BIG = 1 << 30


def kv(tokens: list[int], quantized: bool = False) -> list[Any]:
    """A 2-layer KV cache holding len(tokens) positions; each value is its token id."""
    out: list[Any] = []
    for _ in range(LAYERS):
        c: Any = KVCache()  # type: ignore[no-untyped-call]
        x = mx.broadcast_to(
            mx.array(tokens, dtype=mx.float16)[None, None, :, None], (1, 2, len(tokens), 64)
        )
        c.update_and_fetch(x, x + 1)
        out.append(c.to_quantized(group_size=64, bits=8) if quantized else c)
    return out


def model_folder(root: Path, weights: bytes = b"w" * 5000) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def test_entries_saved_are_restored_with_their_tokens_and_values(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    disk.save("m", "f" * 64, [((1, 2, 3), kv([1, 2, 3])), ((7, 8), kv([7, 8]))])
    back = DiskCache(tmp_path / "cache", BIG).restore("m", "f" * 64, BIG)
    assert [t for t, _ in back] == [(1, 2, 3), (7, 8)]  # oldest first, as saved
    tokens, cache = back[0]
    assert cache_tokens(cache) == 3
    keys = cache[0].state[0]
    assert keys.shape[2] == 3  # saved without MLX's spare room
    assert keys[0, 0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_files_are_0600_in_a_0700_folder_per_model_with_no_temp_left(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    disk.save("m", "a" * 64, [((1, 2), kv([1, 2]))])
    folder = tmp_path / "cache" / "m"
    (only,) = list(folder.iterdir())
    assert only.name.endswith(".safetensors") and not only.name.startswith(".")
    assert stat.S_IMODE(only.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_quantized_cache_survives_the_round_trip(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    disk.save("m", "c" * 64, [((4, 5, 6), kv([4, 5, 6], quantized=True))])
    ((tokens, cache),) = disk.restore("m", "c" * 64, BIG)
    assert tokens == (4, 5, 6)
    assert type(cache[0]).__name__ == "QuantizedKVCache" and cache[0].bits == 8
    assert cache_tokens(cache) == 3


def test_another_fingerprint_never_reads_them_and_removes_them(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    disk.save("m", "a" * 64, [((1, 2), kv([1, 2]))])
    assert disk.restore("m", "b" * 64, BIG) == []
    assert files(tmp_path / "cache" / "m") == []


def test_the_disk_budget_evicts_the_least_recently_used_across_models(tmp_path: Path) -> None:
    probe = DiskCache(tmp_path / "probe", BIG)
    probe.save("p", "a" * 64, [((1, 2, 3, 4), kv([1, 2, 3, 4]))])
    (one,) = [p.stat().st_size for p in files(probe.root / "p")]
    disk = DiskCache(tmp_path / "cache", int(one * 2.5))
    disk.save("a", "a" * 64, [((1, 2, 3, 4), kv([1, 2, 3, 4])), ((5, 6, 7, 8), kv([5, 6, 7, 8]))])
    time.sleep(0.01)  # a later save is more recent (mtime), whatever the clock's resolution
    disk.save("b", "b" * 64, [((9, 10, 11, 12), kv([9, 10, 11, 12]))])
    assert [t for t, _ in DiskCache(disk.root, BIG).restore("a", "a" * 64, BIG)] == [(5, 6, 7, 8)]
    assert len(files(disk.root / "b")) == 1


def test_an_entry_larger_than_the_budget_is_not_written(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", 10)
    assert disk.save("m", "a" * 64, [((1, 2), kv([1, 2]))]) == 0
    assert files(tmp_path / "cache" / "m") == []


def test_restore_reads_the_newest_that_fit_the_memory_budget(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    entries = [((i, i + 1, i + 2), kv([i, i + 1, i + 2])) for i in (1, 10, 20)]
    disk.save("m", "a" * 64, entries)
    size = files(disk.root / "m")[0].stat().st_size
    back = DiskCache(disk.root, BIG).restore("m", "a" * 64, int(size * 2.5))
    assert [t for t, _ in back] == [(10, 11, 12), (20, 21, 22)]


def test_an_entry_dropped_from_memory_is_dropped_from_disk_at_the_next_save(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    short, longer = (1, 2), (1, 2, 3, 4)
    disk.save("m", "a" * 64, [(short, kv(list(short)))])
    disk.restore("m", "a" * 64, BIG)
    disk.save("m", "a" * 64, [(longer, kv(list(longer)))])  # the conversation grew
    assert [t for t, _ in disk.restore("m", "a" * 64, BIG)] == [longer]


def test_an_unreadable_file_is_dropped_not_fatal(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", BIG)
    disk.save("m", "a" * 64, [((1, 2), kv([1, 2]))])
    (path,) = files(disk.root / "m")
    path.write_bytes(b"not a safetensors file")
    assert disk.restore("m", "a" * 64, BIG) == []
    assert not path.exists()


def test_an_old_temp_file_from_a_crash_is_removed_and_a_fresh_one_kept(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "m"
    folder.mkdir(parents=True)
    old, fresh = folder / ".tmp-old.safetensors", folder / ".tmp-new.safetensors"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    DiskCache(tmp_path / "cache", BIG).restore("m", "a" * 64, BIG)
    assert not old.exists() and fresh.exists()


def test_the_fingerprint_changes_with_the_weights_config_and_kv_bits(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model")
    base = fingerprint(folder, None)
    assert fingerprint(folder, None) == base
    assert fingerprint(folder, 8) != base
    (folder / "config.json").write_text('{"model_type": "llama", "rope_theta": 1.0}')
    changed_config = fingerprint(folder, None)
    assert changed_config != base
    weights = folder / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"v" + b"w" * 4999)  # same size
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: the content tells
    assert fingerprint(folder, None) != changed_config


def test_the_fingerprint_of_a_large_file_reads_its_first_and_last_mib(tmp_path: Path) -> None:
    mib = 1 << 20
    folder = model_folder(tmp_path / "model", b"\0" * (3 * mib))
    weights = folder / "model.safetensors"
    base = fingerprint(folder, None)
    for offset in (10, 3 * mib - 10):
        data = bytearray(weights.read_bytes())
        data[offset] = 1
        st = weights.stat()
        weights.write_bytes(bytes(data))
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert fingerprint(folder, None) != base
        base = fingerprint(folder, None)


@pytest.mark.parametrize("name", ["notes.txt", "model.safetensors"])
def test_files_that_are_not_ours_are_never_touched(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "cache" / "m"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"user data")
    disk = DiskCache(tmp_path / "cache", 1)
    disk.save("m", "a" * 64, [((1, 2), kv([1, 2]))])
    disk.restore("m", "b" * 64, BIG)
    assert (folder / name).read_bytes() == b"user data"


@pytest.mark.parametrize("model_id", ["../escape", ".hidden", "a/b", ""])
def test_a_model_id_that_is_not_one_plain_name_gets_no_disk_cache(
    tmp_path: Path, model_id: str
) -> None:
    disk = DiskCache(tmp_path / "root" / "cache", BIG)
    assert disk.save(model_id, "a" * 64, [((1, 2), kv([1, 2]))]) == 0
    assert disk.restore(model_id, "a" * 64, BIG) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_ranks_sharing_one_home_keep_their_parts_apart_and_within_one_budget(
    tmp_path: Path,
) -> None:
    # Two ranks on one machine: the same weights, so fingerprints alike up to the part's suffix.
    root, fp = tmp_path / "cache", "a" * 64
    parts = {name: DiskCache(root, BIG, part=name) for name in ("rank0of2", "rank1of2")}
    for name, disk in parts.items():
        disk.save("m", f"{fp}-{name}", [((1, 2, 3), kv([1, 2, 3]))])
    DiskCache(root, BIG).save("m", fp, [((4, 5), kv([4, 5]))])  # the model in one process
    for name in parts:  # either may restore first: neither drops the other's file
        assert [t for t, _ in parts[name].restore("m", f"{fp}-{name}", BIG)] == [(1, 2, 3)]
    assert [t for t, _ in DiskCache(root, BIG).restore("m", fp, BIG)] == [(4, 5)]
    assert [len(files(root / "m" / name)) for name in parts] == [1, 1]
    # One budget for the whole disk cache: a rank's files count, and go when the least recent.
    (size,) = {p.stat().st_size for p in files(root / "m" / "rank0of2")}
    DiskCache(root, size * 2, part="rank0of2").save(
        "m", f"{fp}-rank0of2", [((1, 2, 3), kv([1, 2, 3]))]
    )
    left = [*files(root / "m"), *files(root / "m" / "rank0of2"), *files(root / "m" / "rank1of2")]
    assert len(left) == 2 and files(root / "m" / "rank0of2")  # the one just saved stays
