"""Where drafts come from and how deep they go: prompt lookup, a prediction, the adaptive depth."""

from __future__ import annotations

from tholos_mlx.drafting import (
    Depth,
    Lookup,
    Prediction,
    Prices,
    prediction_usage,
    speculation,
)


def test_the_tail_is_looked_up_and_what_followed_it_is_the_draft() -> None:
    tokens = [1, 2, 3, 4, 5, 9, 9, 1, 2, 3]
    assert Lookup(tokens).draft(3) == [4, 5, 9]


def test_the_latest_earlier_occurrence_wins_and_the_longest_tail_first() -> None:
    tokens = [7, 2, 3, 10, 1, 2, 3, 20, 5, 1, 2, 3]
    # (1, 2, 3) occurred before 20; (2, 3) alone also before 10, but the longer tail decides.
    assert Lookup(tokens).draft(2) == [20, 5]


def test_a_tail_never_seen_before_drafts_nothing() -> None:
    assert Lookup([1, 2, 3, 4, 5, 6]).draft(4) == []
    assert Lookup([1]).draft(4) == []


def test_the_index_follows_tokens_appended_later() -> None:
    tokens = [1, 2, 3]
    lookup = Lookup(tokens)
    assert lookup.draft(2) == []
    tokens.extend([4, 1, 2])
    assert lookup.draft(2) == [3, 4]


def test_a_prediction_drafts_its_opening_before_any_answer() -> None:
    assert Prediction([5, 6, 7, 8]).draft([], 3) == [5, 6, 7]


def test_a_prediction_is_followed_from_where_the_answer_matches_it() -> None:
    predicted = Prediction([10, 11, 12, 13, 14, 15])
    assert predicted.draft([10, 11], 2) == [12, 13]
    # the answer changed a token, then went on as predicted: realigned on its last tokens
    assert predicted.draft([10, 11, 99, 13], 2) == [14, 15]


def test_a_repeated_stretch_of_a_prediction_is_followed_forward_not_from_its_start() -> None:
    predicted = Prediction([1, 2, 3, 1, 2, 4])
    assert predicted.draft([1, 2, 3], 1) == [1]
    assert predicted.draft([1, 2, 3, 1, 2], 1) == [4]


def test_depth_grows_where_drafts_are_kept_and_falls_to_none_where_they_are_not() -> None:
    good = Depth(4, learn=False)
    for _ in range(10):
        good.verified(4, 4)
    assert good.next() == 4
    bad = Depth(4, learn=False)
    for _ in range(10):
        bad.verified(2, 0)
    assert bad.next() == 0


def test_where_drafting_stopped_paying_a_rare_probe_looks_again() -> None:
    depth = Depth(4, learn=False)
    for _ in range(10):
        depth.verified(1, 0)
    probes = 0
    for _ in range(200):
        if depth.next():
            probes += 1
            depth.verified(1, 0)
        else:
            depth.plain()
    assert 1 <= probes <= 6  # backing off: 16, 32, 64, 128 plain tokens apart


def test_a_wider_pass_that_costs_too_much_switches_drafting_off() -> None:
    cheap = Depth(4, Prices(cost=0.05), learn=False)
    dear = Depth(4, Prices(cost=0.5), learn=False)
    for d in (cheap, dear):
        for _ in range(5):
            d.verified(2, 1)
    assert cheap.next() > 0 and dear.next() == 0


def test_prediction_usage_counts_the_predicted_tokens_found_in_the_answer() -> None:
    assert prediction_usage([1, 2, 3, 4], [1, 2, 3, 4]) == (4, 0)
    assert prediction_usage([1, 2, 3, 4], [1, 2, 9, 4, 5]) == (3, 1)
    assert prediction_usage([], [1, 2]) == (0, 0)
    assert prediction_usage([1, 2], []) == (0, 2)


def test_off_or_no_depth_means_no_speculation() -> None:
    assert speculation("off", 4, greedy=True) is None
    assert speculation("ngram", 0, greedy=True) is None
    assert speculation("ngram", 4, greedy=True) is not None


def test_a_long_match_drafts_at_its_first_sight_and_a_short_one_waits() -> None:
    copying = [5, 6, 7, 8, 9, 1, 2, 5, 6, 7, 8]  # the last 4 tokens were seen before: an edit
    chance = [5, 6, 7, 8, 9, 1, 2, 3, 9, 1]  # only (9, 1) was: prose repeats words
    for history, drafts in ((copying, True), (chance, False)):
        spec = speculation("ngram", 4, greedy=True, learn=False)
        assert spec is not None
        assert bool(spec.draft(history, history[-3:], 4)) is drafts
        assert spec.worth(history, history[-3:]) is drafts


def test_one_rejected_draft_turns_a_fresh_kind_of_evidence_off_but_not_the_others() -> None:
    depth = Depth(4, learn=False)
    assert depth.next("long") > 0
    depth.verified(1, 0)
    assert depth.next("long") == 0
    assert depth.next("prediction") > 0


def test_a_prediction_is_trusted_deeper_than_a_match_in_the_prompt() -> None:
    depth = Depth(4, learn=False)
    assert depth.next("prediction") > depth.next("long") > depth.next("short") == 0


def test_drafting_starts_before_any_plain_step_is_timed_at_the_default_price() -> None:
    depth = Depth(4)
    assert depth.price.step_s is None and depth.next("long") > 0
    depth.verified(1, 1, 0.3)  # nothing to price it against yet: no price learned
    assert depth.price.widths == {}


def test_a_machine_where_a_wide_pass_costs_its_tokens_one_by_one_stops_drafting() -> None:
    depth = Depth(4)
    for _ in range(3):
        depth.plain(1, 0.1)
    for _ in range(10):  # 4 drafted, 2 kept, and the pass took as long as 5 plain steps
        depth.verified(4, 2, 0.5)
    assert depth.price.cost > 0.8
    assert depth.next() == 0


def test_where_only_a_narrow_pass_is_cheap_drafting_settles_on_one_token() -> None:
    # This 2-core CPU: a pass over 2 tokens costs 1.37 steps, wider ones their tokens one by one.
    depth = Depth(4)
    for _ in range(3):
        depth.plain(1, 0.1)
    for _ in range(30):  # a copying answer: every drafted token is kept
        k = depth.next()
        assert k > 0
        depth.verified(k, k, 0.1 * (1.37 if k == 1 else k + 1.2))
    assert depth.next() == 1
    assert depth.price.widths[1] < 1.5


def test_what_one_answer_learned_of_the_price_is_where_the_next_answer_starts() -> None:
    # One model's answers share its Prices: on a machine where a wide pass costs its tokens one
    # by one, the second answer does not pay to learn it again from the cheap prior.
    prices = Prices()
    first = speculation("ngram", 4, greedy=True, prices=prices)
    assert first is not None and first.depth.next("long") > 0  # the prior: drafting pays
    for _ in range(3):
        first.depth.plain(1, 0.1)
    for _ in range(10):
        first.depth.verified(4, 2, 0.5)
    second = speculation("ngram", 4, greedy=True, prices=prices)
    assert second is not None and second.depth.price is prices
    assert second.depth.price.step_s == first.depth.price.step_s and second.depth.price.cost > 0.8
    assert second.depth.next("long") == 0
    fresh = speculation("ngram", 4, greedy=True)
    assert fresh is not None and fresh.depth.next("long") > 0  # another model: its own prices


def test_a_depth_that_does_not_learn_leaves_the_shared_prices_alone() -> None:
    prices = Prices()
    depth = Depth(4, prices, learn=False)
    depth.plain(1, 0.1)
    depth.verified(4, 4, 0.5)
    assert prices == Prices()
