"""Tests for tholos_mlx.ids: the shapes of the ids every dialect hands out."""

from __future__ import annotations

import re

from tholos_mlx.ids import alnum_id, hex_id


def test_an_alnum_id_is_its_prefix_and_that_many_letters_and_digits_never_twice() -> None:
    ids = {alnum_id("call_", 24) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_a_hex_id_is_its_prefix_an_underscore_and_that_many_hex_digits() -> None:
    assert re.fullmatch(r"resp_[0-9a-f]{50}", hex_id("resp", 50))
    assert hex_id("fc", 50) != hex_id("fc", 50)
