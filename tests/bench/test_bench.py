"""Tests for `tholos-mlx bench`: runs end to end, writes complete results; asserts no speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, DEMO_ID
from tholos_mlx.bench import report as bench_report
from tholos_mlx.errors import UsageError

STAT = {"median", "min", "max", "values"}
MACHINE = {"chip", "memory_bytes", "memory_gib", "os", "arch", "cpu_count", "mlx_device"}
SOFTWARE = {"python", "mlx", "mlx-lm", "tholos-mlx", "git_commit", "git_dirty"}
TOP = {"schema", "date", "machine", "software", "model", "compare", "cached_prefix", "ceiling"}


def _result(out: Path) -> tuple[dict[str, Any], list[Path]]:
    files = sorted(out.iterdir())
    (json_file,) = [f for f in files if f.suffix == ".json"]
    return json.loads(json_file.read_text()), files


def _is_stat(value: Any, positive: bool = True) -> None:
    assert set(value) == STAT
    assert value["values"], "every run should have given a value"
    for key in ("median", "min", "max"):
        assert isinstance(value[key], float)
        assert value[key] > 0 if positive else value[key] >= 0
    assert value["min"] <= value["median"] <= value["max"]


def test_bench_compares_raw_mlx_lm_and_the_server_and_writes_every_field(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench",
        "--home",
        demo_home,
        "--compare",
        "--cached-prefix",
        "--prompt-tokens",
        "20",
        "--gen-tokens",
        "4",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--prefix-tokens",
        "32",
        "--out",
        tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result, files = _result(tmp_path)
    assert {f.suffix for f in files} >= {".json", ".md"}
    if importlib.util.find_spec("matplotlib"):
        assert any(f.suffix == ".png" and f.stat().st_size > 0 for f in files)
    assert set(result) == TOP
    assert set(result["machine"]) == MACHINE
    assert set(result["software"]) == SOFTWARE
    assert result["machine"]["mlx_device"] in ("cpu", "gpu")
    assert result["model"]["id"] == DEMO_ID
    assert result["ceiling"] is None

    compare = result["compare"]
    assert (
        compare["gen_tokens"] == 4
        and compare["runs"] == 1
        and compare["server_prompt_cache_mb"] == 0
    )
    (case,) = compare["cases"]
    assert case["prompt_tokens"] == case["prompt_tokens_actual"] == 20
    raw, server = case["raw"], case["server"]
    for name in ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes"):
        _is_stat(raw[name])
    assert raw["generated_tokens"] == [4]  # EOS masked: exactly the tokens asked for
    for name in ("ttft_s", "decode_tps"):
        _is_stat(server[name])
    assert server["prompt_tokens"] == [20]  # the server tokenized the same prompt the same way
    assert server["cached_tokens"] == [0]  # prompt cache off for the comparison
    assert len(server["completion_tokens"]) == 1 and server["stopped_early"] in (0, 1)
    assert case["ratio"]["ttft"] > 0 and case["ratio"]["decode_tps"] > 0
    assert compare["summary"]["decode_ratio"] == case["ratio"]["decode_tps"]
    assert compare["summary"]["server_rss_mib"] > 0

    cached = result["cached_prefix"]
    assert cached["prompt_tokens"] == 32
    assert cached["cold"]["ttft_s"] > 0 and len(cached["warm"]) == 1
    assert cached["warm"][0]["cached_tokens"] > 0  # the shared system prompt came from the cache
    _is_stat(cached["warm_ttft_s"])
    assert cached["warm_cold_ratio"] > 0

    assert "server/raw" in out.stdout and "cached prefix" in out.stdout
    markdown = next(f for f in files if f.suffix == ".md").read_text()
    assert "Raw mlx-lm vs the server" in markdown and "Cached prefix" in markdown


def test_ceiling_streams_every_token_through_the_real_app_and_reports_its_cost(
    tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench",
        "--ceiling",
        "--profile",
        "--ceiling-tokens",
        "3000",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--out",
        tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result, _ = _result(tmp_path)
    assert set(result) == TOP
    assert result["compare"] is None and result["cached_prefix"] is None and result["model"] is None
    ceiling = result["ceiling"]
    assert ceiling["tokens"] == 3000
    for mode in ("flood", "lockstep"):
        figures = ceiling["modes"][mode]
        for name in (
            "seconds",
            "tokens_per_s",
            "wall_us_per_token",
            "frames",
            "frames_per_s",
            "tokens_per_frame",
            "bytes",
            "first_byte_s",
        ):
            _is_stat(figures[name])
        for name in ("loop_cpu_us_per_token", "loop_cpu_us_per_frame", "engine_cpu_us_per_token"):
            _is_stat(figures[name], positive=False)  # CPU clocks may be coarse
    assert ceiling["modes"]["lockstep"]["tokens_per_frame"]["median"] == 1.0
    assert ceiling["tokens_per_s"] > 0 and ceiling["us_per_token"] >= 0
    assert isinstance(ceiling["meets_target"], bool)
    assert ceiling["profile"]["top_self"] and ceiling["profile"]["top_total"]
    assert "ceiling:" in out.stdout


def test_prompts_have_exactly_the_asked_number_of_tokens(demo_home: Path) -> None:
    from tholos_mlx.bench import prompts as bench_prompts
    from tholos_mlx.bench.raw import load_tokenizer

    tokenizer = load_tokenizer(demo_home / "models" / DEMO_ID)
    for size in (24, 100, 333):
        messages, ids = bench_prompts.counting_prompt(tokenizer, size)
        assert len(ids) == size == len(bench_prompts.chat_ids(tokenizer, messages))
    system = bench_prompts.shared_system(tokenizer, 200)
    assert len(bench_prompts.chat_ids(tokenizer, bench_prompts.question_chat(system, 0))) == 200
    with pytest.raises(UsageError, match="at least"):
        bench_prompts.counting_prompt(tokenizer, 5)


@pytest.mark.parametrize(
    "args",
    [
        ["--prompt-tokens", "0"],
        ["--prompt-tokens", "a,b"],
        ["--runs", "0"],
        ["--gen-tokens", "1"],
        ["--warmup", "-1"],
        ["--port", "70000"],
    ],
)
def test_bad_bench_flags_exit_2_with_one_line(args: list[str], cli: CLI) -> None:
    out = cli("bench", *args)
    assert out.returncode == 2
    assert args[0] in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bench_without_a_model_says_how_to_install_one(cli: CLI) -> None:
    out = cli("bench")
    assert out.returncode == 2
    assert "import-gguf" in out.stderr


def test_bench_names_an_unknown_model(demo_home: Path, cli: CLI) -> None:
    out = cli("bench", "--home", demo_home, "--model", "no-such-model")
    assert out.returncode == 2
    assert "no-such-model" in out.stderr


def test_building_the_command_line_does_not_import_mlx() -> None:
    code = (
        "import sys; from tholos_mlx.cli import build_parser; build_parser(); "
        "sys.exit(any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_stats_leave_out_missing_values_and_give_median_min_max() -> None:
    assert bench_report.stats([3.0, None, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "values": [3.0, 1.0, 2.0],
    }
    assert bench_report.stats([None])["median"] is None
    assert bench_report.ratio(1.0, None) is None and bench_report.ratio(1.0, 4.0) == 0.25


def test_result_files_are_named_by_date_and_chip() -> None:
    assert bench_report.slug("Apple M3 Pro") == "apple-m3-pro"
    assert (
        bench_report.slug("Intel(R) Xeon(R) Processor @ 2.50GHz") == "intel-xeon-processor-2-50ghz"
    )
    result = {"date": "2026-03-01T10:15:00+00:00", "machine": {"chip": "Apple M2"}}
    assert bench_report.stem(result) == "20260301-101500-apple-m2"
