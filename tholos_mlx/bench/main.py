"""One bench run: the plan's cases in turn, then the result's files and headlines."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tholos_mlx.bench.plan import Plan
from tholos_mlx.bench.progress import say
from tholos_mlx.bench.results import SCHEMA, Result
from tholos_mlx.bench.sides.client import BenchError
from tholos_mlx.errors import ModelNotFound, UsageError
from tholos_mlx.tiers import ModelEntry, TierTable


def command(args: argparse.Namespace, home: Path) -> int:
    """Run the chosen cases, print their headline figures, write the result files."""
    plan = Plan.from_args(args)
    entry = _model(home, plan.model) if plan.wants_model else None
    # MLX loads from here on, not when cli.py builds the parser.
    from tholos_mlx.bench import environment
    from tholos_mlx.bench.render import files, headlines
    from tholos_mlx.bench.sides import raw

    device = raw.device()
    env = environment.environment(device)
    result: Result = {
        "schema": SCHEMA,
        "date": env["date"],
        "machine": env["machine"],
        "software": env["software"],
        "model": None,
        "compare": None,
        "cached_prefix": None,
        "ceiling": None,
        "structured_output": None,
        "after_restart": None,
    }
    with tempfile.TemporaryDirectory(prefix="tholos-bench-") as tmp:
        try:
            _run(plan, home, entry, Path(tmp), device, result)
        except BenchError as exc:
            print(f"tholos-mlx bench: {exc}", file=sys.stderr)
            return 1
    paths = files.write(result, plan.out)
    print(headlines.headlines(result))
    for path in paths:
        print(f"wrote {path}")
    if result["compare"] and not any(p.suffix == ".png" for p in paths):
        print("no chart: matplotlib is not installed (pip install 'tholos-mlx[bench]')")
    return 0


def _run(
    plan: Plan, home: Path, entry: ModelEntry | None, tmp: Path, device: str, result: Result
) -> None:
    """Each case the plan names, its result filled in as it ends."""
    from tholos_mlx.bench import environment

    logs = tmp
    if entry and plan.synthetic:
        home, entry = _synthetic(plan.synthetic, entry, tmp)
    result["model"] = environment.model_info(entry) if entry else None
    if plan.compare and entry:
        from tholos_mlx.bench.cases import decode

        result["compare"] = decode.compare(plan, home, entry, logs)
    if plan.cached_prefix and entry:
        from tholos_mlx.bench.cases import cached

        result["cached_prefix"] = cached.cached_prefix(plan, home, entry, logs)
    if plan.restart and entry:
        from tholos_mlx.bench.cases import restart

        result["after_restart"] = restart.after_restart(plan, entry, logs)
    if plan.structured and entry:
        from tholos_mlx.bench.cases import structured

        result["structured_output"] = structured.structured_output(plan, home, entry, logs)
    if plan.workload and entry:
        from tholos_mlx.bench.cases import speculation

        result["speculation"] = speculation.speculation(plan, home, entry, logs, device)
    if plan.agent_turn and entry:
        from tholos_mlx.bench.cases import agent_turn

        result["agent_turn"] = agent_turn.agent_turn(plan, home, entry, logs)
    if plan.ceiling:
        from tholos_mlx.bench.cases import ceiling

        runs = plan.runs or 5
        say(f"ceiling: {plan.ceiling_tokens:,} tokens per stream, {runs} runs per mode")
        result["ceiling"] = ceiling.measure(
            plan.ceiling_tokens, runs, plan.warmup, plan.profile, logs
        )


def _synthetic(shape: str, tokenizer_from: ModelEntry, tmp: Path) -> tuple[Path, ModelEntry]:
    """A home in `tmp` holding a random-weight model of this shape; that home and its entry."""
    from tholos_mlx.bench import synthetic

    home = tmp / "home"
    folder = home / "models" / f"synthetic-{shape}"
    say(f"synthetic: building a random-weight 4-bit {shape} with {tokenizer_from.id}'s tokenizer")
    synthetic.build(shape, tokenizer_from.path, folder)
    return home, ModelEntry(folder.name, "synthetic", folder)


def _model(home: Path, name: str | None) -> ModelEntry:
    table = TierTable(home)
    if name:
        try:
            return table.resolve(name)
        except ModelNotFound:
            raise UsageError(
                f"--model {name}: no such model or tier; `tholos-mlx models` lists them"
            ) from None
    entries = table.entries()
    if not entries:
        raise UsageError(f"no model is installed in {home}; `tholos-mlx import-gguf` adds one")
    return entries[0]
