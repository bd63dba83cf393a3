"""Where speculative drafts come from, and how deep to draft: prompt lookup, a prediction, the depth.

Pure Python, no MLX: generation.py verifies the drafts in one forward pass and trims what the
model rejects. Drafts are found by looking the answer's last few tokens up in the tokens seen
so far (the prompt and the answer: agents copy a lot), or first in a client's prediction
(OpenAI's Predicted Outputs). How many tokens to draft is learned as the answer goes: the
acceptance rate and the price of a wider forward pass decide, and where drafting does not pay
the depth drops to none, with a rare probe to notice when it starts to pay again.

Drafting starts at once, on the strength of the match found: a tail of LONGEST tokens seen
before is an answer copying its prompt (an edit, an echoed document), a prediction is the
client's word, while a 2- or 3-token match is as often chance (prose). Each kind of evidence
learns its own acceptance rate from a prior (EVIDENCE), so a long match drafts at its first
sight and a short one only once it has proved itself, and a rejection or two turns a kind off.
Until a plain step has been timed, a wider pass is priced at WIDER_COST.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Literal, Protocol

Mode = Literal["ngram", "draft", "off"]
MODES: tuple[Mode, ...] = ("ngram", "draft", "off")

LONGEST, SHORTEST = 4, 2  # n-gram sizes looked up in the history, longest first
WIDER_COST = 0.36  # a forward over m tokens costs ~1 + 0.36 (m - 1) steps on a CPU (issue 20)
# What a learned price may be: from a GPU's near-free to a CPU where a wide pass costs as much
# as its tokens one by one, or more (measured on a loaded 2-core box with a 4-bit 135M model).
COST_RANGE = (0.01, 2.0)
Evidence = Literal["prediction", "long", "short", "model"]
# Each kind's prior (kept, rejected): its acceptance rate before its first draft. With a 2-token
# pass at ~1.4 steps (this CPU), 0.6 drafts at once; 1/3 waits for a probe to show it pays.
EVIDENCE: dict[Evidence, tuple[float, float]] = {
    "prediction": (3.0, 1.0),  # the client expects the answer to be this
    "long": (1.5, 1.0),  # a tail of LONGEST tokens seen before: copying
    "short": (1.0, 2.0),  # a 2- or 3-token match: in prose, mostly chance
    "model": (1.0, 1.0),  # a draft model's greedy guess
}
DECAY = 0.9  # the weight of past drafts per new one: one rejection of a fresh kind turns it off
MARGIN = 0.05  # a top-2 logprob gap below this is left to a one-token step (bf16 on Metal
# drifts by ~1e-2 between a wide pass and a one-token one; on a CPU the two agree exactly)
GAIN = 1.05  # draft only where the expected speed-up beats plain decoding by this much
PROBE_FIRST, PROBE_LAST = 16, 512  # plain tokens between probes once drafting stopped paying


class Source(Protocol):
    """A drafter beside prompt lookup (a draft model): the tokens it expects after `history`."""

    def draft(self, history: list[int], depth: int) -> list[int]:
        """Up to `depth` tokens to verify after `history`."""
        ...


class Lookup:
    """An index of every n-gram seen in a token list, to the token that followed its last occurrence."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens  # shared with the caller, who appends to it; indexed lazily
        self._done = 0
        self._next: dict[tuple[int, ...], int] = {}

    def _catch_up(self) -> None:
        tokens, index = self.tokens, self._next
        for end in range(max(self._done, 1), len(tokens)):
            # The n-gram ending just before `end` is followed by tokens[end]: now known.
            for n in range(SHORTEST, LONGEST + 1):
                if end >= n:
                    index[tuple(tokens[end - n : end])] = end
        self._done = len(tokens)

    def draft(self, depth: int) -> list[int]:
        """Up to `depth` tokens that followed the latest earlier occurrence of the longest tail found."""
        return self.find(depth)[0]

    def find(self, depth: int) -> tuple[list[int], int]:
        """The draft, and how many tail tokens matched (0: none; LONGEST: the strongest)."""
        self._catch_up()
        tokens = self.tokens
        for n in range(LONGEST, SHORTEST - 1, -1):
            if len(tokens) < n:
                continue
            at = self._next.get(tuple(tokens[-n:]))
            if at is not None:
                return tokens[at : at + depth], n
        return [], 0


class Prediction:
    """A client's expected answer (Predicted Outputs): followed from where the answer matches it."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = list(tokens)
        self._at: dict[tuple[int, ...], list[int]] = {}
        for end in range(1, len(self.tokens)):
            for n in range(1, LONGEST + 1):
                if end >= n:
                    self._at.setdefault(tuple(self.tokens[end - n : end]), []).append(end)
        self._end = 0  # the prediction's index that the answer's end lines up with...
        self._seen = 0  # ...for the answer this long

    def draft(self, answer: Sequence[int], depth: int) -> list[int]:
        """The prediction's tokens after the answer: where the answer went on as predicted,
        from there; else from the nearest place its last tokens are found (ahead first)."""
        new = list(answer[self._seen :])
        self._seen = len(answer)
        if self.tokens[self._end : self._end + len(new)] == new:
            self._end += len(new)
            return self.tokens[self._end : self._end + depth]
        for n in range(min(LONGEST, len(answer)), 0, -1):
            starts = self._at.get(tuple(answer[-n:]))
            if starts:
                ahead = [s for s in starts if s >= self._end]
                self._end = ahead[0] if ahead else starts[0]
                return self.tokens[self._end : self._end + depth]
        return []


@dataclass
class Prices:
    """What a pass over more than one token costs one model on this machine, in plain decode
    steps: learned from every answer's passes and kept with the loaded model, so an answer
    starts from what the answers before it measured, not from the prior each time.

    A draft of k tokens costs what a pass of that width was measured to cost, else 1 + cost * k
    steps: the price is not linear everywhere, so each width keeps its own. On a Mac's GPU a
    wide pass is nearly free; on this 2-core CPU every extra token costs ~0.8 of a step (MLX's
    CPU matmuls are compute-bound), so there drafting pays only where nearly all is kept.
    """

    cost: float = WIDER_COST
    widths: dict[int, float] = field(default_factory=dict)  # draft size -> measured steps
    step_s: float | None = None  # one plain decode step, measured

    def of(self, drafted: int) -> float:
        """The steps a pass verifying `drafted` tokens costs."""
        return self.widths.get(drafted, 1 + self.cost * drafted)


@dataclass
class Depth:
    """How many tokens to draft next, from the acceptance seen and the price of a wider pass.

    The acceptance rate is the chance a drafted token is kept, given the one before it was;
    each kind of evidence (EVIDENCE) has its own, learned within one answer. A draft of k
    yields 1 + a + ... + a^k tokens on average and costs `price.of(k)` steps (Prices, which
    the model's answers share).
    """

    most: int
    price: Prices = field(default_factory=Prices)
    rates: dict[Evidence, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in EVIDENCE.items()}
    )  # evidence -> [kept, rejected], decayed
    learn: bool = True  # learn the price from the passes' times (off: a fixed price, for tests)
    evidence: Evidence = "long"  # what the next draft rests on (Speculation sets it)
    _plain: int = 0  # plain tokens since the last verify pass
    _wait: int = PROBE_FIRST
    _probing: bool = False

    def rate(self, evidence: Evidence | None = None) -> float:
        """The chance a drafted token is kept, on this evidence (else the current one)."""
        kept, missed = self.rates[evidence or self.evidence]
        return kept / (kept + missed)

    def trust(self, evidence: Evidence, kept: float, missed: float = 0.0) -> None:
        """Start one kind of evidence from another prior."""
        self.rates[evidence] = [kept, missed]

    def next(self, evidence: Evidence | None = None) -> int:
        """The depth of the next draft on this evidence (else the current one): 0 where no
        depth pays, but 1 now and then (a probe: the text may have turned to copying)."""
        if evidence is not None:
            self.evidence = evidence
        if self.most <= 0:
            return 0
        a = self.rate()
        best, best_gain = 0, GAIN
        for k in range(1, self.most + 1):
            gain = sum(a**i for i in range(k + 1)) / self.price.of(k)
            if gain > best_gain:
                best, best_gain = k, gain
        self._probing = best == 0 and self._plain >= self._wait
        return 1 if self._probing else best

    def plain(self, tokens: int = 1, seconds: float | None = None) -> None:
        """Tokens decoded without a draft, and the time they took when known."""
        self._plain += tokens
        if self.learn and seconds is not None and tokens > 0:
            each = seconds / tokens
            step = self.price.step_s
            self.price.step_s = each if step is None else 0.8 * step + 0.2 * each

    def verified(self, drafted: int, kept: int, seconds: float | None = None) -> None:
        """A verify pass of `drafted` draft tokens kept `kept` of them in `seconds`."""
        if drafted <= 0:
            return
        rate = self.rates[self.evidence]
        rate[0] = DECAY * rate[0] + kept
        rate[1] = DECAY * rate[1] + (1 if kept < drafted else 0)
        if self._probing:
            self._probing = False
            self._wait = min(self._wait * 2, PROBE_LAST) if kept < drafted else PROBE_FIRST
        self._plain = 0
        price = self.price
        if self.learn and seconds is not None and price.step_s:
            # Clamped, and an average: one pass slowed by another process must not decide alone.
            wider = min(COST_RANGE[1], max(COST_RANGE[0], (seconds / price.step_s - 1) / drafted))
            price.cost = 0.7 * price.cost + 0.3 * wider
            steps = 1 + wider * drafted
            known = price.widths.get(drafted)
            price.widths[drafted] = steps if known is None else 0.7 * known + 0.3 * steps


@dataclass
class Speculation:
    """One answer's drafting: the sources, the depth, and what was drafted and kept."""

    depth: Depth
    greedy: bool  # the sampler is argmax: verify by argmax with the margin check
    prediction: Prediction | None = None
    margin: float = 0.0  # greedy: a top-2 logit gap below this is left to a one-token step
    drafted: int = 0
    accepted: int = 0
    predicted_kept: int = 0  # of the prediction's drafted tokens: kept...
    predicted_drafted: int = 0  # ...and drafted
    notes: list[str] = field(default_factory=list)  # why drafting is off for this model, if so
    source: Source | None = None  # a draft model, in place of prompt lookup
    _lookup: Lookup | None = None
    _from_prediction: bool = False

    def draft(self, history: list[int], answer: Sequence[int], most: int) -> list[int]:
        """The tokens worth verifying after `history` (whose tail is `answer`): as many as
        pay on the evidence found, `most` at most; none where none pays."""
        self._from_prediction = False
        if most <= 0 or self.depth.most <= 0:
            return []
        if self.prediction is not None:
            found = self.prediction.draft(answer, self.depth.most)
            depth = min(most, self.depth.next("prediction")) if found else 0
            if depth > 0:
                self._from_prediction = True
                return found[:depth]
        if self.source is not None:
            depth = min(most, self.depth.next("model"))
            return self.source.draft(history, depth) if depth > 0 else []
        found, n = self._lookup_in(history).find(self.depth.most)
        if not found:
            return []
        return found[: min(most, self.depth.next("long" if n >= LONGEST else "short"))]

    def worth(self, history: list[int], answer: Sequence[int]) -> bool:
        """Whether a draft would pay now (without running a draft model to find out)."""
        if self.prediction is not None and self.prediction.draft(answer, 1):
            if self.depth.next("prediction") > 0:
                return True
        if self.source is not None:
            return self.depth.next("model") > 0
        found, n = self._lookup_in(history).find(1)
        return bool(found) and self.depth.next("long" if n >= LONGEST else "short") > 0

    def _lookup_in(self, history: list[int]) -> Lookup:
        if self._lookup is None or self._lookup.tokens is not history:
            self._lookup = Lookup(history)
        return self._lookup

    def verified(self, drafted: int, kept: int, seconds: float | None) -> None:
        """Count a verify pass and let the depth learn from it."""
        self.drafted += drafted
        self.accepted += kept
        if self._from_prediction:
            self.predicted_drafted += drafted
            self.predicted_kept += kept
        self.depth.verified(drafted, kept, seconds)


def speculation(
    mode: Mode,
    most: int,
    *,
    greedy: bool,
    prediction: Sequence[int] | None = None,
    margin: float = 0.0,
    learn: bool = True,
    source: Source | None = None,
    prices: Prices | None = None,
) -> Speculation | None:
    """The drafting of one answer under `--speculative MODE`, or None where nothing drafts.
    `prices`: what the model's earlier answers measured (they learn on into it)."""
    if mode == "off" or most <= 0:
        return None
    return Speculation(
        Depth(most, prices if prices is not None else Prices(), learn=learn),
        greedy,
        Prediction(prediction) if prediction else None,
        margin,
        source=source,
    )


def prediction_usage(prediction: Sequence[int], answer: Sequence[int]) -> tuple[int, int]:
    """OpenAI's accepted and rejected prediction tokens: those of the prediction that appear in
    the answer (in order), and those that do not."""
    if not prediction:
        return 0, 0
    blocks = SequenceMatcher(None, list(prediction), list(answer), autojunk=False)
    accepted = sum(b.size for b in blocks.get_matching_blocks())
    return accepted, len(prediction) - accepted
