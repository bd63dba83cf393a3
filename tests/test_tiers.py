"""Tests for tholos_mlx.tiers: tiers.toml and the model folders as OpenAI model ids and tiers."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

import pytest

from tholos_mlx.errors import ModelNotFound, UsageError
from tholos_mlx.tiers import UNASSIGNED, TierTable, check_id


def make_model(home: Path, name: str) -> Path:
    """A minimal folder that counts as an installed model."""
    folder = home / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


def write_table(home: Path, text: str) -> None:
    (home / "tiers.toml").write_text(text, encoding="utf-8")


def ids(table: TierTable) -> list[tuple[str, str]]:
    return [(e.id, e.tier) for e in table.entries()]


def test_entries_follow_file_order_then_unlisted_folders_as_unassigned(tholos_home: Path) -> None:
    for name in ("zeta", "alpha", "extra-b", "extra-a"):
        make_model(tholos_home, name)
    write_table(
        tholos_home,
        """
[models.zeta]
path = "models/zeta"
tier = "fast"

[models.alpha]
path = "models/alpha"
tier = "smart"
""",
    )
    assert ids(TierTable(tholos_home)) == [
        ("zeta", "fast"),
        ("alpha", "smart"),
        ("extra-a", UNASSIGNED),
        ("extra-b", UNASSIGNED),
    ]


def test_folders_without_config_json_and_hidden_temp_folders_are_not_models(
    tholos_home: Path,
) -> None:
    make_model(tholos_home, "real")
    (tholos_home / "models" / "empty").mkdir()
    hidden = make_model(tholos_home, ".real.importing-abc")
    assert hidden.exists()
    assert ids(TierTable(tholos_home)) == [("real", UNASSIGNED)]


def test_no_home_at_all_means_no_models(tmp_path: Path) -> None:
    assert TierTable(tmp_path / "missing").entries() == []


def test_a_tier_name_resolves_to_the_first_installed_model_of_that_tier(tholos_home: Path) -> None:
    make_model(tholos_home, "second")
    make_model(tholos_home, "third")
    write_table(
        tholos_home,
        """
[models.gone]
path = "models/gone"
tier = "fast"

[models.second]
path = "models/second"
tier = "fast"

[models.third]
path = "models/third"
tier = "fast"
""",
    )
    table = TierTable(tholos_home)
    assert table.resolve("fast").id == "second"
    assert table.resolve("third").id == "third"
    assert table.resolve("third").path == tholos_home / "models" / "third"


def test_an_unlisted_folder_resolves_by_its_name_and_by_tier_unassigned(tholos_home: Path) -> None:
    make_model(tholos_home, "loose")
    table = TierTable(tholos_home)
    assert table.resolve("loose").tier == UNASSIGNED
    assert table.resolve(UNASSIGNED).id == "loose"


def test_an_absolute_path_in_the_table_is_used_as_is(tholos_home: Path, tmp_path: Path) -> None:
    folder = make_model(tmp_path / "elsewhere", "m")
    write_table(tholos_home, f'[models.far]\npath = "{folder}"\ntier = "big"\n')
    assert TierTable(tholos_home).resolve("big").path == folder


def test_an_unknown_name_raises_model_not_found(tholos_home: Path) -> None:
    make_model(tholos_home, "known")
    with pytest.raises(ModelNotFound) as err:
        TierTable(tholos_home).resolve("nope")
    assert err.value.status == 404
    assert err.value.code == "model_not_found"
    assert err.value.param == "model"


def test_an_entry_whose_folder_is_missing_is_left_out_and_logged_not_fatal(
    tholos_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_model(tholos_home, "ok")
    write_table(
        tholos_home,
        """
[models.ghost]
path = "models/ghost"
tier = "fast"

[models.ok]
path = "models/ok"
tier = "fast"
""",
    )
    with caplog.at_level(logging.WARNING, logger="tholos.tiers"):
        entries = TierTable(tholos_home).entries()
    assert [e.id for e in entries] == ["ok"]
    assert any("ghost" in r.getMessage() for r in caplog.records)


def test_an_invalid_tiers_toml_is_logged_and_folders_still_list(
    tholos_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_model(tholos_home, "m")
    write_table(tholos_home, "[models.m\npath = ")
    with caplog.at_level(logging.ERROR, logger="tholos.tiers"):
        assert ids(TierTable(tholos_home)) == [("m", UNASSIGNED)]
    assert caplog.records


def test_add_writes_a_table_that_reads_back_in_order(tholos_home: Path) -> None:
    table = TierTable(tholos_home)
    a, b = make_model(tholos_home, "llama-3.2-1b"), make_model(tholos_home, "smol")
    table.add("llama-3.2-1b", a, "smart")
    table.add("smol", b, "fast")
    data = tomllib.loads((tholos_home / "tiers.toml").read_text())
    assert data["models"]["llama-3.2-1b"] == {"path": "models/llama-3.2-1b", "tier": "smart"}
    assert ids(TierTable(tholos_home)) == [("llama-3.2-1b", "smart"), ("smol", "fast")]
    assert table.has("smol") and not table.has("other")
    assert table.tier_of("smol") == "fast" and table.tier_of("other") is None


def test_add_replaces_an_existing_entry_in_place(tholos_home: Path) -> None:
    table = TierTable(tholos_home)
    for name in ("one", "two"):
        table.add(name, make_model(tholos_home, name), "fast")
    table.add("one", tholos_home / "models" / "one", "smart")
    assert ids(table) == [("one", "smart"), ("two", "fast")]


def test_add_keeps_a_folder_outside_home_absolute(tholos_home: Path, tmp_path: Path) -> None:
    folder = make_model(tmp_path / "outside", "m")
    TierTable(tholos_home).add("m", folder, "fast")
    data = tomllib.loads((tholos_home / "tiers.toml").read_text())
    assert data["models"]["m"]["path"] == str(folder)


def test_add_writes_atomically_leaving_no_temp_files(tholos_home: Path) -> None:
    table = TierTable(tholos_home)
    for i in range(3):
        table.add(f"m{i}", make_model(tholos_home, f"m{i}"), "fast")
    assert sorted(os.listdir(tholos_home)) == ["models", "tiers.toml"]


def test_add_refuses_to_overwrite_a_tiers_toml_it_cannot_read(tholos_home: Path) -> None:
    broken = "[models.x\npath = "
    write_table(tholos_home, broken)
    with pytest.raises(UsageError, match="not valid TOML"):
        TierTable(tholos_home).add("m", make_model(tholos_home, "m"), "fast")
    assert (tholos_home / "tiers.toml").read_text() == broken


@pytest.mark.parametrize("good", ["smollm2-135m", "Llama-3.2-1B.Q8_0", "a", "x_y"])
def test_check_id_accepts_folder_safe_ids(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", ".", "..", ".hidden", "-x", "a/b", "../up", "a b", "é", "x" * 200]
)
def test_check_id_rejects_ids_that_are_not_plain_folder_names(bad: str) -> None:
    with pytest.raises(UsageError):
        check_id(bad)


def test_an_entry_whose_path_cannot_be_expanded_is_left_out_not_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ok"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (tmp_path / "tiers.toml").write_text(
        '[models.odd]\npath = "~nosuchuser-tholos/m"\ntier = "fast"\n\n'
        '[models.ok]\npath = "models/ok"\ntier = "fast"\n'
    )
    table = TierTable(tmp_path)
    assert [e.id for e in table.entries()] == ["ok"]
    assert table.resolve("fast").id == "ok"


def test_a_tier_table_that_cannot_be_read_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "tiers.toml").mkdir()  # a folder where the file should be
    assert TierTable(tmp_path).entries() == []


def test_remove_drops_one_section_and_keeps_comments_and_the_other_entries(
    tholos_home: Path,
) -> None:
    text = (
        "# my table\n\n"
        '[models.a]\npath = "models/a"  # first\ntier = "fast"\n\n'
        '[models."b.c"]\npath = "models/b"\ntier = "x"\n\n'
        '# the last one\n[models.d]\npath = "models/d"\n'
    )
    write_table(tholos_home, text)
    table = TierTable(tholos_home)
    table.remove("b.c")
    after = (tholos_home / "tiers.toml").read_text()
    assert "# my table" in after and "# first" in after and "# the last one" in after
    assert list(tomllib.loads(after)["models"]) == ["a", "d"]
    table.remove("a")
    assert tomllib.loads((tholos_home / "tiers.toml").read_text()) == {
        "models": {"d": {"path": "models/d"}}
    }


@pytest.mark.parametrize(
    "text",
    [
        '# mine\n[models.a]\npath = "models/a"\n',
        '[models]\na = {path = "models/a"}\n',
    ],
)
def test_removing_the_last_entry_leaves_an_empty_table(tholos_home: Path, text: str) -> None:
    write_table(tholos_home, text)
    TierTable(tholos_home).remove("a")
    assert tomllib.loads((tholos_home / "tiers.toml").read_text()).get("models", {}) == {}
    assert TierTable(tholos_home).entries() == []


def test_remove_rewrites_a_table_of_inline_tables_it_cannot_edit_by_lines(
    tholos_home: Path,
) -> None:
    write_table(
        tholos_home,
        '[models]\na = {path = "models/a", tier = "fast"}\nb = {path = "models/b"}\n',
    )
    TierTable(tholos_home).remove("a")
    assert tomllib.loads((tholos_home / "tiers.toml").read_text()) == {
        "models": {"b": {"path": "models/b"}}
    }


@pytest.mark.parametrize(
    "text",
    [
        'title = "mine"\n[models]\na = {path = "models/a"}\n',  # would lose `title`
        "[models.b]\npath = 'x'\n",  # no entry a at all
        "[models.a\n",  # not TOML
    ],
)
def test_remove_refuses_rather_than_lose_anything_and_leaves_the_file_alone(
    tholos_home: Path, text: str
) -> None:
    write_table(tholos_home, text)
    with pytest.raises(UsageError):
        TierTable(tholos_home).remove("a")
    assert (tholos_home / "tiers.toml").read_text() == text


def test_taken_names_table_entries_and_loose_folders(tholos_home: Path) -> None:
    make_model(tholos_home, "loose")
    write_table(tholos_home, '[models.gone]\npath = "models/gone"\n')
    taken = TierTable(tholos_home).taken()
    assert taken == {
        "gone": tholos_home / "models" / "gone",
        "loose": tholos_home / "models" / "loose",
    }
