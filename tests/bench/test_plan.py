"""The plan of a bench run: built once from the flags, frozen, and what each flag implies."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tholos_mlx.bench.plan import Plan
from tholos_mlx.cli import build_parser
from tholos_mlx.errors import UsageError


def plan(*flags: str) -> Plan:
    return Plan.from_args(build_parser().parse_args(["bench", *flags]))


def test_naming_no_case_runs_the_comparison_only() -> None:
    p = plan()
    assert p.compare and not (p.ceiling or p.cached_prefix or p.restart or p.structured)
    assert p.workload is None and not p.agent_turn and p.wants_model


def test_naming_a_case_runs_only_that_case() -> None:
    p = plan("--workload", "edit")
    assert p.workload == "edit" and not p.compare and p.wants_model
    assert not plan("--ceiling").wants_model


def test_a_peer_is_a_side_of_the_comparison() -> None:
    p = plan("--ceiling", "--peer", "mlx_lm")
    assert p.compare and p.ceiling and p.peer is not None and p.peer.kind == "mlx_lm"


def test_a_hostfile_is_our_server_on_several_ranks_as_the_peer(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[{"ssh": "127.0.0.1"}, {"ssh": "127.0.0.1"}]')
    p = plan("--hostfile", str(hostfile))
    assert p.compare and p.peer is not None
    assert p.peer.kind == "ranks" and p.peer.hostfile == hostfile.resolve()


def test_the_plan_cannot_be_changed_once_built() -> None:
    p = plan("--runs", "3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.runs = 5  # type: ignore[misc]
    assert p.runs == 3 and plan("--runs", "auto").runs is None
    assert p.prompt_tokens == (32, 512, 2048)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--num-draft-tokens", "4"], "--num-draft-tokens goes with --workload"),
        (["--hostfile", "/no/such/hostfile.json"], "--hostfile /no/such/hostfile.json: no such"),
        (["--peer", "mlx_lm", "--hostfile", "/etc/hostname"], "--peer and --hostfile"),
    ],
)
def test_flags_that_do_not_go_together_are_a_usage_error(flags: list[str], says: str) -> None:
    with pytest.raises(UsageError, match=says):
        plan(*flags)
