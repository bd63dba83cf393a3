"""THOLOS_HOME/server.json: published while a server runs, withdrawn only by the process that wrote it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tholos_mlx.address import ADDRESS_FILE, publish, published_port, withdraw


def test_a_published_address_names_the_port_url_and_pid_in_a_private_file(tmp_path: Path) -> None:
    publish(tmp_path, 8757)
    path = tmp_path / ADDRESS_FILE
    assert json.loads(path.read_text()) == {
        "url": "http://127.0.0.1:8757/v1",
        "port": 8757,
        "pid": os.getpid(),
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert published_port(tmp_path) == 8757
    assert [p.name for p in tmp_path.iterdir()] == [ADDRESS_FILE], "no temp file is left"


def test_withdraw_removes_only_the_file_this_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / ADDRESS_FILE
    path.write_text(json.dumps({"port": 9000, "pid": os.getpid() + 1}))
    withdraw(tmp_path)
    assert published_port(tmp_path) == 9000, "another server's address stays"
    publish(tmp_path, 9001)
    withdraw(tmp_path)
    assert not path.exists()
    withdraw(tmp_path)  # already gone: fine


def test_no_file_or_a_damaged_one_names_no_port(tmp_path: Path) -> None:
    assert published_port(tmp_path) is None
    for text in ("{", "[]", '{"port": "8756"}', '{"port": 0}', '{"port": true}'):
        (tmp_path / ADDRESS_FILE).write_text(text)
        assert published_port(tmp_path) is None, text
