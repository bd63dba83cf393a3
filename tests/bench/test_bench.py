"""Tests for `tholos-mlx bench`: runs end to end, writes complete results; asserts no speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import results
from tests.conftest import CLI, DEMO_ID
from tholos_mlx.bench.render import files as bench_report
from tholos_mlx.errors import UsageError


@pytest.mark.e2e
def test_bench_compares_raw_mlx_lm_the_server_and_mlx_lms_own_server_and_writes_every_field(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench",
        "--home",
        demo_home,
        "--peer",
        "mlx_lm",
        "--prompt-tokens",
        "32",
        "--gen-tokens",
        "4",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--out",
        tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path)
    results.environment(result)
    assert set(result["model"]) == results.MODEL
    assert result["model"]["id"] == DEMO_ID and result["model"]["synthetic"] is None
    assert result["ceiling"] is None and result["cached_prefix"] is None

    compare = result["compare"]
    assert compare["runs"] == 1 and compare["warmup"] == 0 and compare["max_seconds"] is None
    case = results.compare(compare, gen=4, prompt_tokens=32, peer=True)
    assert case["stopped_by"] == ["runs"]
    assert case["peer"]["prompt_tokens"] == [32]  # mlx-lm built the same prompt from the chat
    peer = compare["peer"]
    assert peer["kind"] == "mlx_lm" and peer["command"].startswith("python -m mlx_lm server")
    assert peer["version"] and compare["summary"]["peer_rss_mib"] > 0
    # One run gives no interval, and the report says so instead of a verdict.
    assert {t["verdict"] for t in compare["summary"]["targets"]} == {"not measurable here"}

    assert "server/raw" in out.stdout and "tholos/peer" in out.stdout
    markdown = results.markdown(files)
    assert "mlx-lm's own server" in markdown and "not measurable here" in markdown
    assert "fresh nonce line" in markdown and "chat template + tokenize" in markdown
    assert (
        "### Where a decode gap lies" in markdown and "| engine/raw | client/engine |" in markdown
    )


@pytest.mark.e2e
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
    result, _ = results.read(tmp_path)
    results.environment(result)
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
            results.is_stat(figures[name])
        for name in ("loop_cpu_us_per_token", "loop_cpu_us_per_frame", "engine_cpu_us_per_token"):
            results.is_stat(figures[name], positive=False)  # CPU clocks may be coarse
    assert ceiling["modes"]["lockstep"]["tokens_per_frame"]["median"] == 1.0
    assert ceiling["tokens_per_s"] > 0 and ceiling["us_per_token"] >= 0
    assert isinstance(ceiling["meets_target"], bool)
    assert ceiling["profile"]["top_self"] and ceiling["profile"]["top_total"]
    assert "ceiling:" in out.stdout


def test_every_run_gets_a_different_nonce() -> None:
    from tholos_mlx.bench import prompts as bench_prompts

    nonces = {bench_prompts.nonce() for _ in range(100)}
    assert len(nonces) == 100 and all(n.startswith("Run ") for n in nonces)


def test_prompts_have_exactly_the_asked_number_of_tokens(tiny_folder: Path) -> None:
    from tholos_mlx.bench import prompts as bench_prompts
    from tholos_mlx.bench.sides.raw import load_tokenizer

    tokenizer = load_tokenizer(tiny_folder)
    for size in (40, 100, 333):
        messages, ids = bench_prompts.counting_prompt(tokenizer, size)
        assert len(ids) == size == len(bench_prompts.chat_ids(tokenizer, messages))
        nonce = bench_prompts.nonce()
        messages, ids = bench_prompts.counting_prompt(tokenizer, size, nonce)
        assert len(ids) == size == len(bench_prompts.chat_ids(tokenizer, messages))
        assert messages[0]["content"].startswith(nonce + "\n")
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
        ["--runs", "often"],
        ["--max-seconds", "0"],
        ["--peer", "ollama"],
        ["--peer-url", "https://example.com/v1"],
        ["--peer-url", "http://127.0.0.1:99999/v1"],
        ["--peer-url", "http://127.0.0.1:8080/v1"],  # no --peer-model
        ["--peer-model", "llama3"],  # no --peer-url
        ["--peer", "mlx_lm", "--peer-url", "http://127.0.0.1:8080/v1", "--peer-model", "x"],
        ["--synthetic", "llama-70b"],
        ["--workload", "code"],
        ["--num-draft-tokens", "0", "--workload", "edit"],
        ["--num-draft-tokens", "4"],  # no --workload
        ["--hostfile", "/no/such/hostfile.json"],
        ["--hostfile", "/etc/hostname", "--peer", "mlx_lm"],
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


def test_bench_names_an_unknown_model(tiny_home: Path, cli: CLI) -> None:
    out = cli("bench", "--home", tiny_home, "--model", "no-such-model")
    assert out.returncode == 2
    assert "no-such-model" in out.stderr


def test_building_the_command_line_does_not_import_mlx() -> None:
    code = (
        "import sys; from tholos_mlx.cli import build_parser; build_parser(); "
        "sys.exit(any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_result_files_are_named_by_date_and_chip() -> None:
    assert bench_report.slug("Apple M3 Pro") == "apple-m3-pro"
    assert (
        bench_report.slug("Intel(R) Xeon(R) Processor @ 2.50GHz") == "intel-xeon-processor-2-50ghz"
    )
    result = {"date": "2026-03-01T10:15:00+00:00", "machine": {"chip": "Apple M2"}}
    assert bench_report.stem(result) == "20260301-101500-apple-m2"


@pytest.mark.e2e
def test_structured_output_times_the_schema_answer_with_and_without_the_grammar(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench", "--home", demo_home, "--structured", "--runs", "1", "--warmup", "0",
        "--out", tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path)
    assert result["compare"] is None and result["ceiling"] is None
    so = result["structured_output"]
    assert set(so) == {
        "max_tokens", "keys", "constrained", "prompted", "complete_ratio", "decode_ratio", "targets",
    }  # fmt: skip
    assert so["keys"] == 4 and so["max_tokens"] == 64
    for side in ("constrained", "prompted"):
        figures = so[side]
        assert set(figures) == {"complete_s", "per_token_s", "completion_tokens", "valid", "runs"}
        assert figures["runs"] == 1 and len(figures["completion_tokens"]) == 1
        results.is_stat(figures["complete_s"])
        assert 0 <= figures["valid"] <= 1
    # The grammar's guarantee, not a speed: every constrained answer parses with the schema's keys.
    assert so["constrained"]["valid"] == 1
    for name in ("complete_ratio", "decode_ratio"):
        assert so[name]["value"] is None or so[name]["value"] > 0
    assert so["targets"] == {"complete_ratio_below": 1.0, "decode_ratio_at_least": 0.95}
    assert "structured output:" in out.stdout
    assert "## Structured output" in results.markdown(files)


def test_the_structured_case_checks_answers_by_the_schemas_keys_and_types() -> None:
    from tholos_mlx.bench.cases import structured

    good = '{"city":"Paris","country":"France","population_millions":2,"is_capital":true}'
    assert structured.valid(good)
    assert not structured.valid(good.replace("2", "true"))  # a bool is not an integer
    assert not structured.valid('{"city":"Paris"}')
    assert not structured.valid("Paris is the capital")
    assert "response_format" in structured.payload("m", [], "constrained")
    assert "response_format" not in structured.payload("m", [], "prompted")


@pytest.mark.e2e
def test_restart_reads_the_prompt_cache_back_from_disk_and_reports_every_field(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench", "--home", demo_home, "--restart", "--prefix-tokens", "120",
        "--out", tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path)
    assert result["compare"] is None and result["structured_output"] is None
    restarted = result["after_restart"]
    assert set(restarted) == {
        "prefix_tokens", "cold", "after_restart", "speedup", "target_speedup", "disk_files",
    }  # fmt: skip
    assert restarted["prefix_tokens"] == 120 and restarted["target_speedup"] == 5.0
    cold, warm = restarted["cold"], restarted["after_restart"]
    assert set(cold) == set(warm) == {"ttft_s", "prompt_tokens", "cached_tokens"}
    assert cold["prompt_tokens"] == warm["prompt_tokens"] > 100
    # A fresh home: nothing on disk yet; at most the template opening the warm-up shared.
    assert cold["cached_tokens"] < cold["prompt_tokens"] // 10
    assert warm["cached_tokens"] >= cold["prompt_tokens"] - 1  # all of it came back from disk
    assert restarted["speedup"] > 0 and restarted["disk_files"]
    assert not (demo_home / "cache").exists()  # the user's home is never written
    assert "after a restart" in out.stdout
    assert "## Prompt cache across a restart" in results.markdown(files)


def test_bench_help_prints_one_percent_sign_where_it_means_one(cli: CLI) -> None:
    out = cli("bench", "--help")
    assert out.returncode == 0
    assert "%%" not in out.stdout
    assert "95% confidence interval" in " ".join(out.stdout.split())


@pytest.mark.e2e
def test_agent_turn_times_a_second_turn_with_its_volatile_first_line_changed_and_not(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench", "--home", demo_home, "--agent-turn", "--prefix-tokens", "64", "--runs", "1",
        "--warmup", "0", "--out", tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path)
    results.environment(result, frozenset({"agent_turn"}))
    assert result["compare"] is None and result["cached_prefix"] is None
    turn = result["agent_turn"]
    assert set(turn) == {
        "prefix_tokens", "volatile_line", "baseline", "changed", "unchanged",
        "changed_cached_tokens", "unchanged_cached_tokens", "prompt_tokens", "ratio",
    }  # fmt: skip
    results.is_stat(turn["changed"])
    results.is_stat(turn["unchanged"])
    results.is_ratio(turn["ratio"], 1)
    (prompt, _) = turn["prompt_tokens"]
    assert prompt > 64
    # The same header: the second turn reads the first turn's whole prompt from the cache.
    (unchanged,) = turn["unchanged_cached_tokens"]
    assert unchanged > 64
    assert "agent turn:" in out.stdout
    assert "## An agent's second turn" in results.markdown(files)


@pytest.mark.e2e
def test_hostfile_compares_two_ranks_with_one_process_on_the_same_prompts(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([local, local]))
    out = cli(
        "bench", "--home", demo_home, "--hostfile", hostfile, "--prompt-tokens", "32",
        "--gen-tokens", "4", "--runs", "1", "--warmup", "0", "--out", tmp_path / "out",
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path / "out")
    results.environment(result)
    compare = result["compare"]
    case = results.compare(compare, gen=4, prompt_tokens=32, peer=True)
    peer = compare["peer"]
    assert peer["kind"] == "ranks" and "--hostfile" in peer["command"]
    assert peer["model"] == result["model"]["id"]
    assert case["peer"]["prompt_tokens"] == [32]  # the same prompt, the same template
    assert "tholos/peer" in out.stdout
    assert "several ranks" in results.markdown(files)


@pytest.mark.e2e
def test_workload_runs_speculation_on_beside_off_and_reads_the_servers_drafts(
    demo_home: Path, tmp_path: Path, cli: CLI
) -> None:
    out = cli(
        "bench", "--home", demo_home, "--workload", "prose", "--runs", "1", "--warmup", "0",
        "--gen-tokens", "8", "--out", tmp_path, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result, files = results.read(tmp_path)
    results.environment(result, frozenset({"speculation"}))
    assert result["compare"] is None
    sp = result["speculation"]
    assert sp["workload"] == "prose" and sp["mode"] == "ngram" and sp["gen_tokens"] == 8
    assert sp["runs"] == 1 and sp["warmup"] == 1  # one round at least fills the prompt caches
    assert [k["kind"] for k in sp["kinds"]] == ["story", "letter", "explain"]
    assert sp["logged_drafts"]  # the speculating server's timing lines carry its counts
    for kind in sp["kinds"]:
        on, off = kind["on"], kind["off"]
        assert len(on["completion_tokens"]) == len(off["completion_tokens"]) == 1
        # A server with speculation off logs no draft counts at all.
        assert off["drafted"] == [None] and off["accepted"] == [None]
        (drafted,), (accepted,) = on["drafted"], on["accepted"]
        assert 0 <= accepted <= drafted
        results.is_stat(on["decode_tps"])
        results.is_stat(off["decode_tps"])
        # Greedy answers are byte-identical with speculation on and off.
        assert kind["same_answers"] == 1
    assert sp["target"]["target"] == 0.97  # prose, on this CPU
    assert sp["target"]["verdict"] in results.VERDICTS
    assert "speculation, prose workload" in out.stdout
    assert "## Speculative decoding, prose workload" in results.markdown(files)
