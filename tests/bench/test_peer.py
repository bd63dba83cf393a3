"""The peers of a comparison, as the bench would start them (nothing is started here)."""

from __future__ import annotations

from pathlib import Path

from tholos_mlx.bench.plan import PeerSpec
from tholos_mlx.bench.sides.peer import Peer
from tholos_mlx.tiers import ModelEntry


def test_a_hostfile_peer_is_our_server_on_ranks_with_the_same_caches_off(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    entry = ModelEntry("m", "fast", tmp_path / "models" / "m")
    peer = Peer(PeerSpec("ranks", hostfile=hostfile), tmp_path, entry, tmp_path / "peer.log")
    cmd = peer.command
    assert cmd[:2] == ["tholos_mlx", "serve"] and cmd[cmd.index("--hostfile") + 1] == str(hostfile)
    assert cmd[cmd.index("--model") + 1] == "m" and cmd[cmd.index("--prompt-cache-mb") + 1] == "0"
    assert peer.endpoint.key  # our server wants its key, unlike a peer reached by URL
    info = peer.info()
    assert info["kind"] == "ranks" and "hostfile" in info["name"]
    assert info["command"] is not None and "--hostfile" in info["command"]


def test_mlx_lms_own_server_is_started_on_the_model_folder(tmp_path: Path) -> None:
    entry = ModelEntry("m", "fast", tmp_path / "m")
    peer = Peer(PeerSpec("mlx_lm"), tmp_path, entry, tmp_path / "peer.log")
    assert peer.command[:4] == ["mlx_lm", "server", "--model", str(tmp_path / "m")]
    assert peer.info()["name"] == "mlx-lm's own server" and peer.model == "default_model"
