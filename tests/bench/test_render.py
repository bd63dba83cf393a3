"""Rendering reads results only: committed result files render as they were committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tholos_mlx.bench.render.headlines import headlines
from tholos_mlx.bench.render.markdown import markdown

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# Schema-2 files whose Markdown was written by the renderer of their day, unedited.
RENDERED_AS_COMMITTED = (
    "20261130-005616-amd-epyc",  # --structured
    "20261130-011809-amd-epyc",  # --restart
    "20261130-025624-amd-epyc",  # --compare with a peer, synthetic model, timing lines
)


@pytest.mark.parametrize("name", RENDERED_AS_COMMITTED)
def test_a_committed_result_renders_to_its_committed_markdown(name: str) -> None:
    result = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    assert markdown(result) == (RESULTS / f"{name}.md").read_text(encoding="utf-8")
    assert headlines(result).startswith(result["machine"]["chip"])


def test_a_speculation_result_says_when_the_server_logged_no_drafts() -> None:
    result = json.loads((RESULTS / f"{RENDERED_AS_COMMITTED[0]}.json").read_text())
    stat = {"median": 2.0, "min": 1.0, "max": 3.0, "values": [1.0, 2.0, 3.0]}
    none = {"median": None, "min": None, "max": None, "values": []}
    ratio = {"value": 1.5, "ci_low": 1.2, "ci_high": 1.8, "half_width": 0.2, "runs": [3, 3]}
    side = {
        "ttft_s": stat, "decode_tps": stat, "engine_decode_tps": stat,
        "completion_tokens": [5, 5, 5], "drafted": [None] * 3, "accepted": [None] * 3,
    }  # fmt: skip
    result["speculation"] = {
        "workload": "edit", "mode": "ngram", "num_draft_tokens": None, "gen_tokens": 5,
        "runs": 3, "warmup": 0, "order": "interleaved",
        "kinds": [{"kind": "file", "prompt_tokens": [90] * 3, "on": side, "off": side,
                   "decode_ratio": ratio, "acceptance_rate": none, "tokens_per_step": none,
                   "same_answers": 3}],
        "decode_ratio": ratio, "acceptance_rate": none, "tokens_per_step": none,
        "target": {"figure": "decode tok/s, speculation ngram/off, edit workload",
                   "prompt_tokens": None, "target": 1.3, "direction": "at_least", "value": 1.5,
                   "ci_low": 1.2, "ci_high": 1.8, "verdict": "met"},
        "logged_drafts": False,
    }  # fmt: skip
    text = markdown(result)
    assert "## Speculative decoding, edit workload" in text
    assert "| file | 1.500 (1.200–1.800) |" in text and "| 3/3 |" in text
    assert "does not speculate yet" in text
    assert "speculation, edit workload: decode on/off x1.500 (1.200–1.800)" in headlines(result)
