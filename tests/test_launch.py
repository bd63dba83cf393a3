"""serve --hostfile's launcher: the hostfile read as mlx.launch reads it, and its command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tholos_mlx import launch
from tholos_mlx.errors import UsageError


def test_a_missing_or_broken_hostfile_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--hostfile"):
        launch.read_hosts(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(UsageError, match="bad.json"):
        launch.read_hosts(bad)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UsageError, match="no hosts"):
        launch.read_hosts(empty)


def test_ranks_all_on_this_machine_get_ports_nobody_holds(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    path.write_text(json.dumps([local, local]))
    argv = launch.launcher_argv(path, launch.read_hosts(path), "ring")
    assert argv[argv.index("--hostfile") + 1] == str(path)
    assert argv[argv.index("--backend") + 1] == "ring"
    assert int(argv[argv.index("--starting-port") + 1]) > 0


def test_ranks_on_other_macs_use_mlx_launchs_own_ports(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    hosts = [{"ssh": "mac1", "ips": ["10.0.0.1"]}, {"ssh": "mac2", "ips": ["10.0.0.2"]}]
    path.write_text(json.dumps(hosts))
    argv = launch.launcher_argv(path, launch.read_hosts(path), "jaccl")
    assert "--starting-port" not in argv
    assert argv[argv.index("--backend") + 1] == "jaccl"


def test_the_ranks_timeouts_set_here_reach_the_ranks_on_other_macs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps([{"ssh": "mac1", "ips": ["10.0.0.1"]}] * 2))
    monkeypatch.setenv("THOLOS_RANK_HEARTBEAT_TIMEOUT", "20")
    monkeypatch.delenv("THOLOS_RANK_STEP_TIMEOUT", raising=False)
    argv = launch.launcher_argv(path, launch.read_hosts(path), "ring")
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert "THOLOS_RANK_HEARTBEAT_TIMEOUT=20" in envs
    assert not any(e.startswith("THOLOS_RANK_STEP_TIMEOUT") for e in envs)


def test_a_process_started_by_mlx_launch_is_a_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLX_RANK", raising=False)
    assert not launch.launched()
    monkeypatch.setenv("MLX_RANK", "1")
    assert launch.launched()


def test_serve_hostfile_refuses_a_model_that_cannot_split_in_one_line_before_any_rank_starts(
    cli: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    folder = home / "models" / "old"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (home / "tiers.toml").write_text('[models.old]\npath = "models/old"\n')
    hosts = tmp_path / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    hosts.write_text(json.dumps([local, local]))
    out = cli("serve", "--home", home, "--hostfile", hosts, "--model", "old")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "gpt2" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_relative_hostfile_is_made_absolute_for_the_service_files(tmp_path: Path) -> None:
    from tholos_mlx.config import SERVE_SETTINGS

    (setting,) = [s for s in SERVE_SETTINGS if s.flag == "--hostfile"]
    assert Path(setting.parse("hosts.json")).is_absolute()
    assert setting.parse("~/hosts.json") == str(Path.home() / "hosts.json")


def _watch(answers: list[bool], dead_after: float, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(launch.Rank0Watch, "PROBE_EVERY_S", 0.01)
    it = iter(answers)
    return launch.Rank0Watch(lambda: next(it, False), dead_after)


def test_a_rank_0_still_loading_is_not_judged_before_its_first_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = _watch([False] * 1000, 0.05, monkeypatch)
    assert not watch.silent.wait(0.5)


def test_a_rank_0_silent_past_the_dead_time_after_answering_is_called_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = _watch([False, True, True], 0.05, monkeypatch)
    assert watch.silent.wait(5)


def test_a_rank_0_that_misses_a_probe_now_and_then_is_not_called_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = _watch([True, False] * 300, 1.0, monkeypatch)
    assert not watch.silent.wait(3)


def test_the_launcher_waits_on_its_ranks_output_and_never_on_their_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import select

    from mlx._distributed_utils import launch as mlx_launch

    from tholos_mlx import mlx_launch as shim

    out_r, out_w = os.pipe()  # a rank's stdout, silent
    in_r, in_w = os.pipe()  # a rank's stdin: a pipe with room is always writable
    try:
        assert select.select([out_r], [in_w], [], 0.2)[1] == [in_w]  # why mlx.launch spins
        assert shim._outputs_only([out_r], [in_w], [], 0.2) == ([], [], [])  # it waits instead
        os.write(out_w, b"x")
        assert shim._outputs_only([out_r], [in_w], [], 5)[0] == [out_r]  # output still read
    finally:
        for fd in (out_r, out_w, in_r, in_w):
            os.close(fd)
    monkeypatch.setattr(mlx_launch, "select", select.select)
    monkeypatch.setattr(mlx_launch, "main", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["python", "--hostfile", "hosts.json"])  # main names it
    assert shim.main() == 0
    assert mlx_launch.select is shim._outputs_only  # mlx.launch's own loop now uses it
