"""What a forward pass over k tokens costs beside one token: the ceiling speculation can reach here.

    .venv/bin/python scripts/forward_cost.py PATH          # an MLX model folder
    .venv/bin/python scripts/forward_cost.py PATH --context 2000 --widest 8 --runs 8

A verify pass feeds the pending token and k drafted ones together. Were every draft kept, a pass
of width w would give w tokens for the price of one pass, so the best speculation can do on this
machine with this model is max over w of w * t(1) / t(w). On a Mac's GPU a decode step is bound by
memory bandwidth and t(5) is little more than t(1); on a CPU whose matmuls are compute-bound each
extra token costs nearly a step, and the ceiling stays near 1 whatever the acceptance.

The widths are taken in turns, `--runs` times, after a prompt of `--context` tokens (the cache is
trimmed back after each pass), and each width's median is reported, so load on a shared machine
falls on every width. Not in the wheel: a measuring aid for the speculation work (issue 20).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache


def measure(model: Any, context: int, widest: int, runs: int) -> dict[int, float]:
    """Median seconds of a forward pass at each width 1..widest, after `context` tokens."""
    vocab = int(model.args.vocab_size) if hasattr(model, "args") else 1000
    tokens = mx.random.randint(0, vocab, (1, context + widest), key=mx.random.key(0))
    cache = make_prompt_cache(model)
    mx.eval(model(tokens[:, :context], cache=cache))
    times: dict[int, list[float]] = {w: [] for w in range(1, widest + 1)}
    for run in range(runs + 1):
        for w in times:
            began = time.perf_counter()
            mx.eval(model(tokens[:, context : context + w], cache=cache))
            if run:  # the first round only warms each width's shapes
                times[w].append(time.perf_counter() - began)
            trim_prompt_cache(cache, w)
    return {w: statistics.median(t) for w, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", help="an MLX model folder")
    parser.add_argument("--context", type=int, default=500, help="prompt tokens before the passes")
    parser.add_argument("--widest", type=int, default=8, help="the widest pass (pending + drafts)")
    parser.add_argument("--runs", type=int, default=6, help="timed passes per width")
    args = parser.parse_args()
    model = load(args.model)[0]
    medians = measure(model, args.context, args.widest, args.runs)
    one = medians[1]
    print(f"{mx.default_device()}, context {args.context}, median of {args.runs} per width")
    print("| width | ms | steps (t(w)/t(1)) | tokens per step if all kept |")
    print("|---:|---:|---:|---:|")
    for w, t in medians.items():
        print(f"| {w} | {t * 1e3:.1f} | {t / one:.2f} | {w * one / t:.2f} |")
    best = max(medians, key=lambda w: w * one / medians[w])
    print(f"ceiling: {best * one / medians[best]:.2f}x at width {best}, every draft kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
