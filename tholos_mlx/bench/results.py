"""What a benchmark result holds, typed, and the targets it is judged against.

Every other bench module imports its shapes from here, and this one imports nothing of the
bench: the cases fill these, rendering (Markdown, chart, files) reads them. They are TypedDicts,
so a result is plain JSON at run time (the files in benchmarks/results/ are these dicts) and
checked by mypy.
"""

# No `from __future__ import annotations`: NotRequired must be seen when the classes are built.
from typing import Literal, NotRequired, TypedDict

SCHEMA = 2  # 2: ratios carry intervals; peer, synthetic, structured_output (later keys optional)
NOT_MEASURABLE = "not measurable here"
Direction = Literal["at_least", "at_most"]

# Targets (issues 6, 14, 20): each one beside the figure it judges.
DECODE_TARGET = 0.98  # server/raw decode tok/s, at least
TTFT_TARGET = 1.05  # server/raw time to first token, at most: the server's own cost <= 5%
CACHED_TARGET = 0.10  # warm/cold time to first token with a shared prefix, at most
RESTART_TARGET_SPEEDUP = 5.0  # the first token after a restart: at least 5x sooner than cold
STRUCTURED_COMPLETE_BELOW = 1.0  # constrained/prompted seconds to the complete answer
STRUCTURED_DECODE_AT_LEAST = 0.95  # constrained/prompted decode speed, at GPU speed
CEILING_TOKENS_PER_S = 20_000  # streamed tokens a second to one client, at least
CEILING_US_PER_TOKEN = 50.0  # event-loop CPU per one-token frame, at most
# Speculation on/off decode tok/s, at least, by workload and by MLX device (issue 20 item 6).
SPECULATION_TARGETS: dict[str, dict[str, float]] = {
    "edit": {"gpu": 1.8, "cpu": 1.3},
    "prose": {"gpu": 0.98, "cpu": 0.97},
}


class Stat(TypedDict):
    """Median, min and max of the runs, and the runs' values."""

    median: float | None
    min: float | None
    max: float | None
    values: list[float]


class Ratio(TypedDict):
    """median(top) / median(bottom) with its 95% bootstrap interval (None below 3 runs a side)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    half_width: float | None
    runs: list[int]


class Judged(TypedDict):
    """A ratio against its target, and what the interval says of it."""

    figure: str
    prompt_tokens: int | None  # None where the figure spans prompts of several sizes
    target: float
    direction: Direction
    value: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str


class Machine(TypedDict):
    """The machine a result was measured on."""

    chip: str
    memory_bytes: int
    memory_gib: float
    os: str
    arch: str
    cpu_count: int
    mlx_device: str


# The file spells two of its keys with a hyphen, as the distributions are named.
Software = TypedDict(
    "Software",
    {
        "python": str,
        "mlx": str,
        "mlx-lm": str,
        "tholos-mlx": str,
        "git_commit": str,
        "git_dirty": bool,
    },
)


class SyntheticInfo(TypedDict):
    """A random-weight model's shape and where its tokenizer came from."""

    shape: str
    weights: str
    tokenizer_from: str


class ModelInfo(TypedDict):
    """What a result records of the model."""

    id: str
    tier: str
    folder: str
    model_type: str | None
    weights_bytes: int
    weights_mib: float
    quantization_bits: int | None
    context: int | None
    synthetic: SyntheticInfo | None


class StreamFigures(TypedDict):
    """Client-side figures of one streamed request (ours or a peer's)."""

    ttft_s: float | None
    decode_tps: float | None
    completion_tokens: int
    prompt_tokens: int | None
    cached_tokens: int
    stopped_early: bool
    tokens_from: str
    inside: NotRequired[dict[str, float | None] | None]  # the server's timing line for it


class RawFigures(TypedDict):
    """One raw mlx-lm run."""

    ttft_s: float
    prefill_tps: float
    decode_tps: float | None
    peak_memory_bytes: int
    tokens: int


class PeerInfo(TypedDict):
    """What a result records of the peer."""

    kind: str
    name: str
    url: str
    model: str
    command: str | None
    version: str | None
    python: str | None


class RawSummary(TypedDict):
    """Raw mlx-lm's figures over a cell's runs."""

    ttft_s: Stat
    prefill_tps: Stat
    decode_tps: Stat
    peak_memory_bytes: Stat
    generated_tokens: list[int]


class InsideRatios(TypedDict):
    """Where a gap lies: the engine against raw, the client against the engine."""

    first_token_vs_raw_ttft: Ratio
    decode_vs_raw: Ratio
    client_decode_vs_inside: Ratio


class Inside(TypedDict):
    """The server's own account of its runs (its timing lines)."""

    runs_logged: int
    phases_ms: dict[str, Stat]
    decode_tps: Stat
    ratio: InsideRatios


class Served(TypedDict):
    """A server's figures over a cell's runs (ours or the peer's)."""

    ttft_s: Stat
    decode_tps: Stat
    completion_tokens: list[int]
    prompt_tokens: list[int | None]
    cached_tokens: list[int]
    stopped_early: int
    tokens_from: list[str]
    template_tokenize_s: NotRequired[Stat]  # ours only
    inside: NotRequired[Inside]  # ours only


class RatioPair(TypedDict):
    """Time to first token and decode rate, one side over another."""

    ttft: Ratio | None
    decode_tps: Ratio | None


class ServerCost(TypedDict):
    """What the server adds to the time to first token."""

    ttft_added_ms: float | None
    template_tokenize_ms: float | None


class CompareCase(TypedDict):
    """One prompt size of the comparison."""

    prompt_tokens: int
    prompt_tokens_actual: int
    runs: int
    seconds: float
    stopped_by: list[str]
    raw: RawSummary
    server: Served
    peer: Served | None
    ratio: RatioPair
    peer_ratio: RatioPair | None
    server_cost: ServerCost


class CompareSummary(TypedDict):
    """The comparison's headline ratios and every target's verdict."""

    decode_ratio: float | None
    ttft_ratio: float | None
    peer_decode_ratio: float | None
    peer_ttft_ratio: float | None
    server_rss_mib: float | None
    server_mlx_peak_mib: float | None
    peer_rss_mib: float | None
    min_runs_for_interval: int
    targets: list[Judged]


class Compare(TypedDict):
    """Raw mlx-lm, the server and a peer on the same prompts."""

    gen_tokens: int
    runs: int | str
    warmup: int
    max_seconds: float | None
    order: str
    server_prompt_cache_mb: int
    raw_eos: str
    fresh_prefix: str
    peer: PeerInfo | None
    cases: list[CompareCase]
    summary: CompareSummary


class CachedRun(TypedDict):
    """One request of the cached-prefix case."""

    ttft_s: float | None
    prompt_tokens: int | None
    cached_tokens: int
    completion_tokens: int


class Cached(TypedDict):
    """The prompt cache: a long shared system prompt, cold then warm."""

    prefix_tokens: int
    prompt_tokens: int | None
    cold: CachedRun
    warm: list[CachedRun]
    warm_ttft_s: Stat
    warm_cold_ratio: float | None
    target_ratio: float


class RestartRun(TypedDict):
    """One request of the restart case."""

    ttft_s: float | None
    prompt_tokens: int | None
    cached_tokens: int


class Restart(TypedDict):
    """The disk prompt cache: one long prompt cold, then after a restart."""

    prefix_tokens: int
    cold: RestartRun
    after_restart: RestartRun
    speedup: float | None
    target_speedup: float
    disk_files: list[str]


class StructuredSide(TypedDict):
    """One side of the structured-output case."""

    complete_s: Stat
    per_token_s: Stat
    completion_tokens: list[int]
    valid: int
    runs: int


class StructuredTargets(TypedDict):
    """The structured-output case's targets."""

    complete_ratio_below: float
    decode_ratio_at_least: float


class Structured(TypedDict):
    """A JSON-schema answer with the grammar and without it."""

    max_tokens: int
    keys: int
    constrained: StructuredSide
    prompted: StructuredSide
    complete_ratio: Ratio
    decode_ratio: Ratio
    targets: StructuredTargets


class ProfileRow(TypedDict):
    """One function of a profile, per streamed token."""

    function: str
    calls_per_token: float
    self_us_per_token: float
    total_us_per_token: float


class Profile(TypedDict):
    """Where the event loop's time per token goes."""

    tool: str
    profiled_us_per_token: float
    top_self: list[ProfileRow]
    top_total: list[ProfileRow]


class Ceiling(TypedDict):
    """The server's own ceiling with a zero-cost engine."""

    tokens: int
    runs: int
    warmup: int
    modes: dict[str, dict[str, Stat]]
    tokens_per_s: float
    us_per_token: float
    one_token_per_frame_tokens_per_s: float
    target_tokens_per_s: int
    target_us_per_token: float
    meets_target: bool
    profile: NotRequired[Profile]


class SpeculationSide(TypedDict):
    """One server (speculation on or off) over a workload's runs of one prompt kind or all."""

    ttft_s: Stat
    decode_tps: Stat
    engine_decode_tps: Stat
    completion_tokens: list[int]
    drafted: list[int | None]
    accepted: list[int | None]


class SpeculationKind(TypedDict):
    """One kind of prompt of a workload (e.g. a file rewritten), on beside off."""

    kind: str
    prompt_tokens: list[int | None]
    on: SpeculationSide
    off: SpeculationSide
    decode_ratio: Ratio
    acceptance_rate: Stat
    tokens_per_step: Stat
    same_answers: int  # runs whose greedy answers were byte-identical on and off


class Speculation(TypedDict):
    """`--workload`: the server with speculative decoding on beside off, in the same run."""

    workload: str
    mode: str
    num_draft_tokens: int | None
    gen_tokens: int
    runs: int
    warmup: int
    order: str
    kinds: list[SpeculationKind]
    decode_ratio: Ratio
    acceptance_rate: Stat
    tokens_per_step: Stat
    target: Judged
    logged_drafts: bool  # whether the server's timing lines carried drafted= and accepted=


class AgentTurn(TypedDict):
    """A second agent turn's first token after the system prompt's first line changed."""

    prefix_tokens: int
    volatile_line: str
    baseline: str
    changed: Stat
    unchanged: Stat
    changed_cached_tokens: list[int]
    unchanged_cached_tokens: list[int]
    prompt_tokens: list[int | None]
    ratio: Ratio


class Result(TypedDict):
    """One `tholos-mlx bench` run: the environment, then one entry per case (None if not run)."""

    schema: int
    date: str
    machine: Machine
    software: Software
    model: ModelInfo | None
    compare: Compare | None
    cached_prefix: Cached | None
    ceiling: Ceiling | None
    structured_output: Structured | None
    after_restart: Restart | None
    # Later cases: present only when they ran, so earlier files and readers stay as they were.
    speculation: NotRequired[Speculation]
    agent_turn: NotRequired[AgentTurn]
