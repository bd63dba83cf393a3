"""`tholos-mlx models` add / scan / remove and `cache clear`, through the real command line.

Other tools' folders are built in temp dirs: a Hugging Face hub cache with real snapshots/ and
blobs/ symlinks, and LM Studio's ~/.lmstudio/models; HOME and HF_* point there, never at the
real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CLI, ROOT
from tests.health_stub import health_stub
from tholos_mlx.tiers import TierTable

HF_REPO = "models--HuggingFaceTB--SmolLM2-135M-Instruct"
HF_ID = "smollm2-135m-instruct"
NEW_REV, OLD_REV = "a" * 40, "b" * 40
LMS_ID = "smol-tiny-mlx-4bit"
TIERS_BEFORE = (
    '# my models, by hand\n\n[models.keep]\npath = "models/keep"  # a note\ntier = "fast"\n'
)


@dataclass(frozen=True)
class Machine:
    """The pretend machine: its HF hub cache, LM Studio folder and a model's files to place there."""

    hub: Path
    lmstudio: Path
    user: Path
    model: Path  # the tiny model: config.json, model.safetensors, tokenizer files

    @property
    def hf_snapshot(self) -> Path:
        return self.hub / HF_REPO / "snapshots" / NEW_REV

    @property
    def lms_folder(self) -> Path:
        return self.lmstudio / "mlx-community" / "Smol-Tiny-MLX-4bit"


MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same file system: free, and a real file as a blob is
    except OSError:
        shutil.copy2(src, dst)


def hf_repo(hub: Path, repo: str, rev: str, files: dict[str, Path | bytes]) -> Path:
    """A hub cache repo as huggingface_hub leaves it: blobs/, snapshots/REV/ links, refs/main."""
    blobs, snap = hub / repo / "blobs", hub / repo / "snapshots" / rev
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for i, (name, content) in enumerate(files.items()):
        blob = blobs / f"{rev[:8]}{i:04d}"
        if isinstance(content, bytes):
            blob.write_bytes(content)
        else:
            _link_or_copy(content, blob)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (hub / repo / "refs").mkdir(exist_ok=True)
    (hub / repo / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture
def machine(tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """A fake hub cache and LM Studio folder; HOME and HF_HUB_CACHE point at them."""
    user, hub = tmp_path / "user", tmp_path / "hub"
    lmstudio = user / ".lmstudio" / "models"
    src = tiny_folder
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    for var in ("HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    m = Machine(hub, lmstudio, user, src)
    # The model twice in the hub cache: an old snapshot and the one refs/main names.
    hf_repo(hub, HF_REPO, OLD_REV, {"config.json": src / "config.json"})
    hf_repo(hub, HF_REPO, NEW_REV, {n: src / n for n in MODEL_FILES})
    hf_repo(hub, "models--TheBloke--Tiny-GGUF", "c" * 40, {"tiny.Q4_0.gguf": b"GGUF"})
    odd = {"model_type": "nosucharch"}
    hf_repo(
        hub,
        "models--someorg--Odd-Arch",
        "d" * 40,
        {
            "config.json": json.dumps(odd).encode(),
            "model.safetensors": b"0",
            "tokenizer.json": src / "tokenizer.json",
        },
    )
    (hub / "datasets--someorg--data" / "snapshots" / "e").mkdir(parents=True)
    # LM Studio: ORG/NAME/ folders holding the files themselves (here: links to the model's).
    m.lms_folder.mkdir(parents=True)
    for name in MODEL_FILES:
        (m.lms_folder / name).symlink_to(src / name)
    gguf_only = lmstudio / "lmstudio-community" / "Other-GGUF"
    gguf_only.mkdir(parents=True)
    (gguf_only / "other.gguf").write_bytes(b"GGUF")
    return m


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def tiers(home: Path) -> dict[str, object]:
    models = tomllib.loads((home / "tiers.toml").read_text())["models"]
    assert isinstance(models, dict)
    return models


def model_folder(home: Path, name: str, *, marker: bool, source: Path) -> Path:
    """A folder under THOLOS_HOME/models holding a model's files (hard links), with or
    without import-gguf's marker."""
    folder = home / "models" / name
    folder.mkdir(parents=True)
    for f in MODEL_FILES:
        _link_or_copy(source / f, folder / f)
    if marker:
        (folder / "tholos_import.json").write_text("{}")
    return folder


# --- add ------------------------------------------------------------------------------------


def test_add_registers_a_folder_in_place_and_models_lists_it(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    out = cli("models", "add", machine.lms_folder, "--id", "tiny", "--tier", "fast")
    assert out.returncode == 0, out.stderr
    assert tiers(tholos_home) == {"tiny": {"path": str(machine.lms_folder), "tier": "fast"}}
    assert not (tholos_home / "models").exists(), "nothing is copied"
    listed = cli("models")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("tiny "))
    assert row.split()[:3] == ["tiny", "fast", str(machine.lms_folder)]


def test_models_says_which_model_the_running_server_has_loaded(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    for model_id in ("tiny", "other"):
        folder = machine.lmstudio / "org" / model_id
        folder.mkdir(parents=True)
        for name in MODEL_FILES:
            (folder / name).symlink_to(machine.model / name)
        assert cli("models", "add", folder, "--id", model_id).returncode == 0
    assert [line.split()[-1] for line in cli("models").stdout.splitlines()] == ["LOADED", "-", "-"]
    (tholos_home / "api_key").write_text("k\n")
    with health_stub("k", b'{"status": "ok", "model": "other", "queue": 0}') as port:
        (tholos_home / "config.toml").write_text(f"port = {port}\n")
        listed = cli("models").stdout.splitlines()
    assert [line.split()[-1] for line in listed] == ["LOADED", "no", "yes"]


def test_a_hub_snapshot_made_of_blob_links_is_added_and_loads_in_mlx_lm(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.utils import load_model

    out = cli("models", "add", machine.hf_snapshot, "--id", "smol")
    assert out.returncode == 0, out.stderr
    entry = TierTable(tholos_home).resolve("smol")
    assert (entry.path, entry.tier) == (machine.hf_snapshot, "unassigned")
    model, _ = load_model(entry.path, lazy=True)
    assert load_tokenizer(entry.path).encode("Paris")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda m, t: t / "missing", "no such folder"),
        (lambda m, t: _dir(t / "empty"), "no config.json"),
        (lambda m, t: _dir(t / "cfg", {"config.json": '{"model_type": "llama"}'}), "no weights"),
        (
            lambda m, t: _dir(t / "notjson", {"config.json": "{", "model.safetensors": "0"}),
            "config.json is not valid JSON",
        ),
        (lambda m, t: m.hub / "models--someorg--Odd-Arch" / "snapshots" / ("d" * 40), "nosucharch"),
        (
            lambda m, t: m.hub / "models--TheBloke--Tiny-GGUF" / "snapshots" / ("c" * 40),
            "import-gguf",
        ),
        (lambda m, t: _without(m, t, "tokenizer.json"), "no tokenizer"),
        (lambda m, t: _broken_weights(m, t), "missing (a broken link"),
    ],
)
def test_add_refuses_a_folder_mlx_lm_cannot_load_leaving_tiers_toml_unchanged(
    cli: CLI, machine: Machine, tholos_home: Path, tmp_path: Path, make: object, says: str
) -> None:
    (tholos_home / "tiers.toml").write_text(TIERS_BEFORE)
    folder = make(machine, tmp_path)  # type: ignore[operator]
    line = one_line_error(cli("models", "add", folder, "--id", "new"))
    assert says in line and str(folder) in line
    assert (tholos_home / "tiers.toml").read_text() == TIERS_BEFORE


def _dir(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


def _without(m: Machine, t: Path, missing: str) -> Path:
    folder = t / "partial"
    folder.mkdir()
    for name in MODEL_FILES:
        if name not in (missing, "tokenizer_config.json"):
            (folder / name).symlink_to(m.model / name)
    return folder


def _broken_weights(m: Machine, t: Path) -> Path:
    folder = _without(m, t, "model.safetensors")
    (folder / "model.safetensors").symlink_to(t / "blobs" / "never-downloaded")
    return folder


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--id", "keep"], "'keep' is taken"),
        (["--id", "../up"], "invalid model id"),
        (["--id", "ok", "--tier", " "], "--tier must not be empty"),
    ],
)
def test_add_refuses_a_taken_or_bad_id_or_tier_leaving_tiers_toml_unchanged(
    cli: CLI, machine: Machine, tholos_home: Path, args: list[str], says: str
) -> None:
    (tholos_home / "tiers.toml").write_text(TIERS_BEFORE)
    assert says in one_line_error(cli("models", "add", machine.lms_folder, *args))
    assert (tholos_home / "tiers.toml").read_text() == TIERS_BEFORE


def test_add_refuses_a_folder_already_registered_under_another_id(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    assert cli("models", "add", machine.lms_folder, "--id", "one").returncode == 0
    before = (tholos_home / "tiers.toml").read_bytes()
    line = one_line_error(cli("models", "add", machine.lms_folder, "--id", "two"))
    assert "already registered as 'one'" in line
    assert (tholos_home / "tiers.toml").read_bytes() == before


def test_an_unreadable_tiers_toml_is_never_overwritten_by_add(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text("[models.x\n")
    assert "not valid TOML" in one_line_error(
        cli("models", "add", machine.lms_folder, "--id", "new")
    )
    assert (tholos_home / "tiers.toml").read_text() == "[models.x\n"


def test_checking_a_folder_never_imports_mlx(machine: Machine) -> None:
    probe = (
        "import sys; from pathlib import Path; from tholos_mlx import mlx_folder;"
        f"print(mlx_folder.problem(Path({str(machine.lms_folder)!r})));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.stdout.splitlines() == ["None", "[]"], out.stderr


# --- scan -----------------------------------------------------------------------------------


def scan_rows(out: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str, str]]:
    """The scan table as {folder: (id, status, source)}."""
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "SOURCE", "FOLDER"]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in lines[1:]:
        if not line.startswith(("not loadable:", "gguf only:", "`", "registered ", "skipped ")):
            cells = line.split("  ")
            cells = [c.strip() for c in cells if c.strip()]
            rows[cells[3]] = (cells[0], cells[1], cells[2])
    return rows


def test_scan_lists_mlx_folders_of_the_hub_cache_and_lm_studio_with_their_ids(
    cli: CLI, machine: Machine
) -> None:
    out = cli("models", "scan")
    rows = scan_rows(out)
    assert rows[str(machine.hf_snapshot)] == (HF_ID, "not registered", "huggingface")
    assert rows[str(machine.lms_folder)] == (LMS_ID, "not registered", "lmstudio")
    odd = machine.hub / "models--someorg--Odd-Arch" / "snapshots" / ("d" * 40)
    assert rows[str(odd)] == ("odd-arch", "not loadable", "huggingface")
    assert f"not loadable: {odd}: model_type 'nosucharch' is not supported" in out.stdout
    gguf = machine.lmstudio / "lmstudio-community" / "Other-GGUF"
    assert rows[str(gguf)] == ("other-gguf", "gguf only", "lmstudio")
    assert f"gguf only: {gguf}: GGUF files, not MLX weights" in out.stdout
    assert "import-gguf FILE --id ID" in out.stdout
    assert "datasets--" not in out.stdout
    assert str(machine.hub / HF_REPO / "snapshots" / OLD_REV) not in out.stdout


def test_scan_without_refs_main_takes_the_newest_snapshot(cli: CLI, machine: Machine) -> None:
    (machine.hub / HF_REPO / "refs" / "main").unlink()
    old = machine.hub / HF_REPO / "snapshots" / OLD_REV
    os.utime(old, (1, 1))
    os.utime(machine.hf_snapshot, (2_000_000_000, 2_000_000_000))
    assert str(machine.hf_snapshot) in scan_rows(cli("models", "scan"))


def test_scan_add_registers_the_loadable_ones_and_skips_an_id_clash_with_a_line(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    # LM Studio holds the same model under the same NAME: its id clashes with the hub's.
    twin = machine.lmstudio / "other-org" / "SmolLM2-135M-Instruct"
    twin.mkdir(parents=True)
    for name in MODEL_FILES:
        (twin / name).symlink_to(machine.model / name)

    out = cli("models", "scan", "--add")

    assert out.returncode == 0, out.stderr
    assert tiers(tholos_home) == {
        HF_ID: {"path": str(machine.hf_snapshot), "tier": "unassigned"},
        LMS_ID: {"path": str(machine.lms_folder), "tier": "unassigned"},
    }
    skipped = [line for line in out.stdout.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and str(twin) in skipped[0] and "taken" in skipped[0]
    again = scan_rows(cli("models", "scan"))
    assert again[str(machine.hf_snapshot)][1] == "registered"
    assert again[str(twin)][1] == "id taken"


def test_scan_shows_a_folder_registered_under_another_id(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    assert cli("models", "add", machine.hf_snapshot, "--id", "mine").returncode == 0
    rows = scan_rows(cli("models", "scan"))
    assert rows[str(machine.hf_snapshot)] == (HF_ID, "registered as mine", "huggingface")


def test_scan_falls_back_to_hf_home_then_the_user_cache(
    cli: CLI, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(machine.hub.parent / "hf-home"))
    (machine.hub.parent / "hf-home").mkdir()
    machine.hub.rename(machine.hub.parent / "hf-home" / "hub")
    moved = machine.hub.parent / "hf-home" / "hub" / HF_REPO / "snapshots" / NEW_REV
    assert str(moved) in scan_rows(cli("models", "scan"))

    monkeypatch.delenv("HF_HOME")
    (machine.user / ".cache" / "huggingface").mkdir(parents=True)
    (machine.hub.parent / "hf-home" / "hub").rename(machine.user / ".cache/huggingface/hub")
    moved = machine.user / ".cache/huggingface/hub" / HF_REPO / "snapshots" / NEW_REV
    assert str(moved) in scan_rows(cli("models", "scan"))


def test_scan_with_nothing_found_says_where_it_looked(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    out = cli("models", "scan", "--add")
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "no-hub") in out.stdout and ".lmstudio" in out.stdout


# --- remove ---------------------------------------------------------------------------------


def test_remove_drops_the_entry_keeps_the_folder_and_the_rest_of_tiers_toml(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    (tholos_home / "tiers.toml").write_text(TIERS_BEFORE)
    assert cli("models", "add", machine.lms_folder, "--id", "tiny").returncode == 0

    out = cli("models", "remove", "tiny")

    assert out.returncode == 0, out.stderr
    assert (tholos_home / "tiers.toml").read_text() == TIERS_BEFORE
    assert (machine.lms_folder / "config.json").is_file()


def test_models_finds_a_server_on_another_port_through_the_address_file_it_published(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    assert cli("models", "add", machine.lms_folder, "--id", "tiny").returncode == 0
    (tholos_home / "api_key").write_text("k\n")
    with health_stub("k", b'{"status": "ok", "model": "tiny", "queue": 0}') as port:
        # No config.toml names the port: the server said where it is, as serve does.
        (tholos_home / "server.json").write_text(json.dumps({"port": port, "pid": 1}))
        listed = cli("models").stdout.splitlines()
    assert [line.split()[-1] for line in listed] == ["LOADED", "yes"]


def test_remove_of_the_model_a_running_server_answers_with_is_refused_in_one_line(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    assert cli("models", "add", machine.lms_folder, "--id", "tiny").returncode == 0
    assert cli("models", "add", machine.hf_snapshot, "--id", "smol").returncode == 0
    (tholos_home / "api_key").write_text("k\n")
    for health in (
        b'{"status": "ok", "model": "tiny", "queue": 0}',
        b'{"status": "ok", "model": null, "last_model": "tiny", "queue": 0}',  # idle-unloaded
    ):
        with health_stub("k", health) as port:
            (tholos_home / "server.json").write_text(json.dumps({"port": port, "pid": 1}))
            out = cli("models", "remove", "tiny")
        assert out.returncode == 2
        assert f"server on 127.0.0.1:{port}" in one_line_error(out) and "stop" in out.stderr
        assert TierTable(tholos_home).has("tiny")
    with health_stub("k", b'{"status": "ok", "model": "tiny", "queue": 0}') as port:
        (tholos_home / "server.json").write_text(json.dumps({"port": port, "pid": 1}))
        other = cli("models", "remove", "smol")  # not the server's model: it goes
    assert other.returncode == 0, other.stderr
    (tholos_home / "server.json").unlink()  # the server stopped
    assert cli("models", "remove", "tiny").returncode == 0
    assert not TierTable(tholos_home).has("tiny")


def test_remove_also_deletes_the_models_prompt_cache_on_disk(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    assert cli("models", "add", machine.lms_folder, "--id", "tiny").returncode == 0
    for model_id in ("tiny", "other"):
        (tholos_home / "cache" / model_id).mkdir(parents=True)
        for i in range(3):
            (tholos_home / "cache" / model_id / f"{i}.safetensors").write_bytes(b"kv")

    out = cli("models", "remove", "tiny")

    assert out.returncode == 0, out.stderr
    assert "3 prompt cache files" in out.stdout
    assert os.listdir(tholos_home / "cache") == ["other"]


def test_remove_delete_deletes_a_folder_import_gguf_made(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    folder = model_folder(tholos_home, "made", marker=True, source=machine.model)
    (tholos_home / "tiers.toml").write_text(
        TIERS_BEFORE + '\n[models.made]\npath = "models/made"\ntier = "fast"\n'
    )

    out = cli("models", "remove", "made", "--delete")

    assert out.returncode == 0, out.stderr
    assert not folder.exists() and os.listdir(tholos_home / "models") == []
    assert (tholos_home / "tiers.toml").read_text() == TIERS_BEFORE
    assert (machine.model / "model.safetensors").is_file(), "only the hard link went"


def test_remove_delete_also_takes_a_made_folder_tiers_toml_does_not_name(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    folder = model_folder(tholos_home, "loose", marker=True, source=machine.model)
    assert cli("models", "remove", "loose", "--delete").returncode == 0
    assert not folder.exists() and not (tholos_home / "tiers.toml").exists()


def test_a_hand_made_folder_under_models_can_be_given_an_id_and_a_tier_but_not_removed(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    folder = model_folder(tholos_home, "handmade", marker=False, source=machine.model)
    assert [line.split()[0] for line in cli("models").stdout.splitlines()] == ["ID", "handmade"]
    why = one_line_error(cli("models", "remove", "handmade"))
    assert "listed because its folder is in" in why and "move that folder out" in why
    out = cli("models", "add", folder, "--id", "hand", "--tier", "fast")
    assert out.returncode == 0, out.stderr
    assert tiers(tholos_home) == {"hand": {"path": "models/handmade", "tier": "fast"}}
    assert [line.split()[:2] for line in cli("models").stdout.splitlines()[1:]] == [
        ["hand", "fast"]
    ]
    assert folder.is_dir(), "nothing is moved or copied"
    assert "already registered as 'hand'" in one_line_error(
        cli("models", "add", folder, "--id", "again")
    )


def test_remove_delete_refuses_what_import_gguf_did_not_make_and_changes_nothing(
    cli: CLI, machine: Machine, tholos_home: Path
) -> None:
    mine = model_folder(tholos_home, "mine", marker=False, source=machine.model)
    made = model_folder(tholos_home, "made", marker=True, source=machine.model)
    (tholos_home / "models" / "linked").symlink_to(made)
    text = TIERS_BEFORE + "".join(
        f'\n[models.{i}]\npath = "{p}"\ntier = "fast"\n'
        for i, p in [
            ("outside", machine.lms_folder),
            ("mine", "models/mine"),
            ("linked", "models/linked"),
        ]
    )
    (tholos_home / "tiers.toml").write_text(text)
    for model_id, says in [
        ("outside", "is not inside"),
        ("mine", "was not made by import-gguf"),
        ("linked", "is not inside"),
    ]:
        line = one_line_error(cli("models", "remove", model_id, "--delete"))
        assert says in line, line
        assert (tholos_home / "tiers.toml").read_text() == text
    assert (machine.lms_folder / "config.json").is_file() and (mine / "config.json").is_file()
    assert (made / "config.json").is_file()


def test_remove_of_an_unknown_id_exits_2_and_changes_nothing(cli: CLI, tholos_home: Path) -> None:
    (tholos_home / "tiers.toml").write_text(TIERS_BEFORE)
    for args in (["nope"], ["nope", "--delete"]):
        assert "no model 'nope'" in one_line_error(cli("models", "remove", *args))
    assert (tholos_home / "tiers.toml").read_text() == TIERS_BEFORE


# --- cache clear ----------------------------------------------------------------------------


def test_cache_clear_deletes_one_models_cache_or_all_and_nothing_outside(
    cli: CLI, tholos_home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"x")
    cache = tholos_home / "cache"
    for model_id in ("a", "b"):
        (cache / model_id).mkdir(parents=True)
        (cache / model_id / "entry.safetensors").write_bytes(b"kv")
    (cache / "b" / "elsewhere").symlink_to(outside)
    (cache / "c").symlink_to(outside)

    assert cli("cache", "clear", "a").returncode == 0
    assert sorted(os.listdir(cache)) == ["b", "c"]

    assert cli("cache", "clear").returncode == 0
    assert os.listdir(cache) == []
    assert (outside / "keep.bin").read_bytes() == b"x", "links are removed, never followed"

    assert cli("cache", "clear", "a").returncode == 0  # nothing left: fine
    assert "not a model id" in one_line_error(cli("cache", "clear", "../outside"))
    assert outside.exists()


def test_cache_clear_counts_every_file_of_a_models_cache(cli: CLI, tholos_home: Path) -> None:
    folder = tholos_home / "cache" / "a"
    folder.mkdir(parents=True)
    for i in range(14):
        (folder / f"{i:016x}-{i:032x}.safetensors").write_bytes(b"kv")

    out = cli("cache", "clear")

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"cleared 14 prompt cache files in {tholos_home / 'cache'}")


def test_cache_clear_says_when_a_running_server_will_write_its_cache_back(
    cli: CLI, tholos_home: Path
) -> None:
    (tholos_home / "api_key").write_text("k\n")
    quiet = cli("cache", "clear")
    assert quiet.returncode == 0 and "note:" not in quiet.stdout  # no server on the port
    with health_stub("k", b'{"status": "ok", "model": "a", "queue": 0}') as port:
        (tholos_home / "config.toml").write_text(f"port = {port}\n")
        out = cli("cache", "clear")
    assert out.returncode == 0
    assert f"the server on port {port} still holds its prompt cache" in out.stdout
