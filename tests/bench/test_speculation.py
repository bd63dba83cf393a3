"""The speculation case's bookkeeping on recorded runs: acceptance, tokens per step, its flags."""

from __future__ import annotations

from tholos_mlx.bench.cases import speculation
from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.results import StreamFigures
from tholos_mlx.bench.workloads import WORKLOADS
from tholos_mlx.cli import build_parser


def fig(tokens: int) -> StreamFigures:
    return {
        "ttft_s": 0.5,
        "decode_tps": 10.0,
        "completion_tokens": tokens,
        "prompt_tokens": 100,
        "cached_tokens": 0,
        "stopped_early": False,
        "tokens_from": "usage",
    }


def test_acceptance_and_tokens_per_step_come_from_the_timing_line() -> None:
    # 41 tokens: the first from the prefill, then 40 in 10 steps keeping 3 drafts each.
    run = speculation.Run(fig(41), {"decode_tps": 12.0, "drafted": 40.0, "accepted": 30.0}, "x")
    assert run.drafted == 40 and run.accepted == 30
    assert run.acceptance == 0.75
    assert run.tokens_per_step == 4.0
    assert run.engine_decode_tps == 12.0


def test_a_server_that_drafts_nothing_makes_one_token_a_step() -> None:
    run = speculation.Run(fig(20), {"decode_tps": 9.0, "drafted": 0.0, "accepted": 0.0}, "x")
    assert run.acceptance is None and run.tokens_per_step == 1.0


def test_a_server_that_logs_no_drafts_gives_no_draft_figures() -> None:
    run = speculation.Run(fig(20), {"decode_tps": 9.0}, "x")
    assert run.drafted is None and run.acceptance is None and run.tokens_per_step is None
    assert speculation.Run(fig(20), None, "x").engine_decode_tps is None


def test_one_server_speculates_and_the_other_does_not() -> None:
    args = build_parser().parse_args(["bench", "--workload", "edit", "--num-draft-tokens", "6"])
    p = Plan.from_args(args)
    on, off = speculation.server_flags(p, "on"), speculation.server_flags(p, "off")
    assert on[on.index("--speculative") + 1] == "ngram"
    assert on[on.index("--num-draft-tokens") + 1] == "6"
    assert off[off.index("--speculative") + 1] == "off" and "--num-draft-tokens" not in off


def test_edit_prompts_hold_what_the_answer_should_copy_and_prose_prompts_do_not() -> None:
    for kind in WORKLOADS["edit"]:
        text = kind.build("Run 1.")[-1]["content"]
        assert len(text) > 600, kind.name  # a file, a document or a passage to copy
    for kind in WORKLOADS["prose"]:
        assert len(kind.build("Run 1.")[-1]["content"]) < 200, kind.name
    nonced = WORKLOADS["edit"][0].build("Run abc.")
    assert nonced[0]["content"].startswith("Run abc.\n")


def test_the_overall_ratio_is_not_widened_by_kinds_that_decode_at_different_rates() -> None:
    def runs(rates: list[float]) -> list[speculation.Run]:
        return [speculation.Run({**fig(20), "decode_tps": r}, None, "x") for r in rates]

    seen = {
        "quote": {"on": runs([40.0, 41.0, 39.0]), "off": runs([20.0, 20.5, 19.5])},
        "json": {"on": runs([10.0, 10.2, 9.8]), "off": runs([5.0, 5.1, 4.9])},
    }
    on, off = speculation._normalized(seen)
    ci = speculation.ratio_ci(on, off)
    assert ci["value"] == 2.0
    assert ci["half_width"] is not None and ci["half_width"] < 0.05
    raw = speculation.ratio_ci(
        [r.fig["decode_tps"] for k in seen.values() for r in k["on"]],
        [r.fig["decode_tps"] for k in seen.values() for r in k["off"]],
    )
    assert raw["half_width"] is not None and raw["half_width"] > ci["half_width"]
