"""Checks of a bench result file shared by the end-to-end bench tests: every field, no speed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from tholos_mlx.bench.cases.decode import PHASES

STAT = {"median", "min", "max", "values"}
CI = {"value", "ci_low", "ci_high", "half_width", "runs"}
MACHINE = {"chip", "memory_bytes", "memory_gib", "os", "arch", "cpu_count", "mlx_device"}
SOFTWARE = {"python", "mlx", "mlx-lm", "tholos-mlx", "git_commit", "git_dirty"}
TOP = {
    "schema",
    "date",
    "machine",
    "software",
    "model",
    "compare",
    "cached_prefix",
    "ceiling",
    "structured_output",
    "after_restart",
}
MODEL = {
    "id",
    "tier",
    "folder",
    "model_type",
    "weights_bytes",
    "weights_mib",
    "quantization_bits",
    "context",
    "synthetic",
}
COMPARE = {
    "gen_tokens",
    "runs",
    "warmup",
    "max_seconds",
    "order",
    "server_prompt_cache_mb",
    "raw_eos",
    "fresh_prefix",
    "peer",
    "cases",
    "summary",
}
CASE = {
    "prompt_tokens",
    "prompt_tokens_actual",
    "runs",
    "seconds",
    "stopped_by",
    "raw",
    "server",
    "peer",
    "ratio",
    "peer_ratio",
    "server_cost",
}
SERVED = {
    "ttft_s",
    "decode_tps",
    "completion_tokens",
    "prompt_tokens",
    "cached_tokens",
    "stopped_early",
    "tokens_from",
}
PEER = {"kind", "name", "url", "model", "command", "version", "python"}
SUMMARY = {
    "decode_ratio",
    "ttft_ratio",
    "peer_decode_ratio",
    "peer_ttft_ratio",
    "server_rss_mib",
    "server_mlx_peak_mib",
    "peer_rss_mib",
    "min_runs_for_interval",
    "targets",
}
TARGET = {"figure", "prompt_tokens", "target", "direction", "value", "ci_low", "ci_high", "verdict"}
VERDICTS = {"met", "missed", "not measurable here"}


def read(out: Path) -> tuple[dict[str, Any], list[Path]]:
    """The one result of a run in `out` and every file written there."""
    files = sorted(out.iterdir())
    (json_file,) = [f for f in files if f.suffix == ".json"]
    assert {f.suffix for f in files} >= {".json", ".md"}
    if importlib.util.find_spec("matplotlib") and json.loads(json_file.read_text())["compare"]:
        assert any(f.suffix == ".png" and f.stat().st_size > 0 for f in files)
    return json.loads(json_file.read_text()), files


def is_stat(value: Any, positive: bool = True) -> None:
    """A {median, min, max, values} of at least one run, in order."""
    assert set(value) == STAT
    assert value["values"], "every run should have given a value"
    for key in ("median", "min", "max"):
        assert isinstance(value[key], float)
        assert value[key] > 0 if positive else value[key] >= 0
    assert value["min"] <= value["median"] <= value["max"]


def is_ratio(ci: Any, runs: int) -> None:
    """A ratio of two sides' medians, with its interval once there are runs enough for one."""
    assert set(ci) == CI
    assert ci["value"] > 0 and ci["runs"][0] >= 1 and ci["runs"][1] >= 1
    if runs >= 3 and min(ci["runs"]) >= 3:
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
        assert ci["half_width"] == (ci["ci_high"] - ci["ci_low"]) / 2 / ci["value"]
    else:
        assert ci["ci_low"] is None and ci["ci_high"] is None and ci["half_width"] is None


def environment(result: dict[str, Any], later: frozenset[str] = frozenset()) -> None:
    """The top level, the machine and the software; `later`: the optional cases that ran."""
    assert set(result) == TOP | later
    assert result["schema"] == 2
    assert result["structured_output"] is None  # the hook the structured-output work fills
    assert set(result["machine"]) == MACHINE
    assert set(result["software"]) == SOFTWARE
    assert result["machine"]["mlx_device"] in ("cpu", "gpu")


def inside(side: Any, runs: int) -> None:
    """The server's own timing of each run, read back from its log, beside raw's figures."""
    assert set(side) == {"runs_logged", "phases_ms", "decode_tps", "ratio"}
    assert side["runs_logged"] == runs  # one timing line per answer
    phases = side["phases_ms"]
    assert list(phases) == [*PHASES, "outside_ms"]
    for name, stat in phases.items():
        is_stat(stat, positive=name == "first_token_ms")
        assert len(stat["values"]) == runs
    is_stat(side["decode_tps"])
    assert set(side["ratio"]) == {
        "first_token_vs_raw_ttft",
        "decode_vs_raw",
        "client_decode_vs_inside",
    }
    for ci in side["ratio"].values():
        is_ratio(ci, runs)


def served(side: Any, runs: int, prompt_tokens: int | None) -> None:
    """A server's figures (ours or the peer's) over `runs` runs."""
    assert set(side) >= SERVED
    for name in ("ttft_s", "decode_tps"):
        is_stat(side[name])
        assert len(side[name]["values"]) == runs
    assert len(side["completion_tokens"]) == runs and all(t > 0 for t in side["completion_tokens"])
    if prompt_tokens is not None:  # the same prompt, tokenized the same way
        assert side["prompt_tokens"] == [prompt_tokens] * runs
    assert 0 <= side["stopped_early"] <= runs
    assert side["tokens_from"] == ["usage"]


def compare(c: Any, gen: int, prompt_tokens: int, peer: bool) -> dict[str, Any]:
    """A comparison of one prompt size; its one case."""
    assert set(c) == COMPARE
    assert c["gen_tokens"] == gen and c["server_prompt_cache_mb"] == 0
    assert "nonce" in c["fresh_prefix"]
    (case,) = c["cases"]
    assert set(case) == CASE
    runs = case["runs"]
    assert runs >= 1 and case["seconds"] > 0
    assert case["prompt_tokens"] == case["prompt_tokens_actual"] == prompt_tokens
    raw = case["raw"]
    for name in ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes"):
        is_stat(raw[name])
    assert raw["generated_tokens"] == [gen] * runs  # EOS masked: exactly the tokens asked for
    served(case["server"], runs, prompt_tokens)
    assert case["server"]["cached_tokens"] == [0] * runs  # prompt cache off for the comparison
    is_stat(case["server"]["template_tokenize_s"])
    inside(case["server"]["inside"], runs)
    for name in ("ttft", "decode_tps"):
        is_ratio(case["ratio"][name], runs)
    cost = case["server_cost"]
    assert set(cost) == {"ttft_added_ms", "template_tokenize_ms"}
    assert isinstance(cost["ttft_added_ms"], float) and cost["template_tokenize_ms"] > 0
    s = c["summary"]
    assert set(s) == SUMMARY
    assert s["decode_ratio"] == case["ratio"]["decode_tps"]["value"]
    assert s["ttft_ratio"] == case["ratio"]["ttft"]["value"]
    assert s["server_rss_mib"] > 0 and s["min_runs_for_interval"] == 3
    assert s["server_mlx_peak_mib"] > 0  # MLX's own figure, logged by the server as it stopped
    if peer:
        assert set(c["peer"]) == PEER
        served(case["peer"], runs, None)
        for name in ("ttft", "decode_tps"):
            is_ratio(case["peer_ratio"][name], runs)
        assert s["peer_decode_ratio"] == case["peer_ratio"]["decode_tps"]["value"]
    else:
        assert c["peer"] is None and case["peer"] is None and case["peer_ratio"] is None
        assert s["peer_decode_ratio"] is None and s["peer_rss_mib"] is None
    assert len(s["targets"]) == (4 if peer else 2)
    for t in s["targets"]:
        assert set(t) == TARGET and t["verdict"] in VERDICTS
        assert t["prompt_tokens"] == prompt_tokens
        if t["ci_low"] is None:
            assert t["verdict"] == "not measurable here"
    return dict(case)


def markdown(files: list[Path]) -> str:
    """The Markdown result's text."""
    return next(f for f in files if f.suffix == ".md").read_text()
