"""Tests for tholos_mlx.stops: stop strings over streamed text."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from tholos_mlx.stops import StopMatcher


def run(stops: Sequence[str], pieces: Sequence[str]) -> tuple[list[str], bool]:
    """Feed pieces until a stop; the emitted pieces (flush included) and whether it stopped."""
    matcher = StopMatcher(stops)
    out: list[str] = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def reference(stops: Sequence[str], text: str) -> tuple[str, bool]:
    """The text before the first stop to complete (the longest, on a tie), char by char."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if s and text[:end].endswith(s)]
        if done:
            return text[: end - max(map(len, done))], True
    return text, False


def test_no_stops_passes_every_piece_through_unchanged() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("hello") == ("hello", False)
    assert matcher.feed("") == ("", False)
    assert matcher.feed(" world") == (" world", False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopMatcher(["", ""])
    assert matcher.feed("abc") == ("abc", False)


def test_text_without_any_stop_prefix_is_emitted_at_once() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("hello") == ("hello", False)
    assert matcher.flush() == ""


def test_stop_in_one_piece_cuts_before_it_and_drops_the_rest() -> None:
    assert run(["END"], ["abc END def"]) == (["abc "], True)


def test_stop_spanning_several_pieces_is_matched() -> None:
    out, stopped = run(["<|end|>"], ["Hi", " there<", "|e", "nd", "|> trailing"])
    assert stopped
    assert "".join(out) == "Hi there"
    assert out == ["Hi", " there", "", "", ""]


def test_partial_prefix_is_held_then_released_when_it_does_not_complete() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == ("go ", False)
    assert matcher.feed("O") == ("", False)
    assert matcher.feed("P!") == ("", True)
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == ("go ", False)
    assert matcher.feed("ART") == ("START", False)


def test_held_prefix_is_returned_by_flush_at_the_end() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("last line\n") == ("last line", False)
    assert matcher.flush() == "\n"
    assert matcher.flush() == ""


def test_stop_at_the_very_start_emits_nothing() -> None:
    assert run(["Q:"], ["Q:", " more"]) == ([""], True)
    assert run(["Q:"], ["Q", ":"]) == (["", ""], True)


def test_overlapping_prefix_aab_is_found_in_aaab() -> None:
    matcher = StopMatcher(["aab"])
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("a", False)
    assert matcher.feed("b") == ("", True)
    assert run(["aab"], ["aaab"]) == (["a"], True)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["world", "lo"], ["hello world"]) == (["hel"], True)
    assert run(["\n\n", "User:"], ["Sure. User: hi\n\nbye"]) == (["Sure. "], True)


def test_first_stop_to_complete_wins_however_the_text_is_split() -> None:
    # "bc" completes before "abcd" could, so the answer is "a" whether fed whole or in pieces.
    assert run(["abcd", "bc"], ["abcd"]) == (["a"], True)
    assert run(["abcd", "bc"], ["a", "b", "c", "d"]) == (["", "", "a"], True)


def test_stops_sharing_a_start_cut_at_the_shorter_completed_one() -> None:
    assert run(["ab", "abc"], ["xabc"]) == (["x"], True)


def test_stops_completing_together_cut_at_the_earlier_start() -> None:
    assert run(["b", "ab"], ["xab"]) == (["x"], True)


def test_unicode_stops_and_text_are_handled_as_characters() -> None:
    out, stopped = run(["终止", "🛑"], ["你好", "终", "止了"])
    assert (out, stopped) == (["你好", "", ""], True)
    out, stopped = run(["🛑"], ["été ", "🛑", "après"])
    assert ("".join(out), stopped) == ("été ", True)
    assert run(["é!"], ["café", " ok"]) == (["caf", "é ok", ""], False)


def test_feeding_after_a_stop_emits_nothing() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.feed("ax") == ("a", True)
    assert matcher.matched == "x"
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""


@pytest.mark.parametrize("seed", range(50))
def test_random_splits_match_a_character_by_character_reference(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab\né"
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(3)]
    text = "".join(rng.choice(alphabet) for _ in range(40))
    cuts = sorted(rng.sample(range(1, len(text)), 8))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    out, stopped = run(stops, pieces)
    assert ("".join(out), stopped) == reference(stops, text)
