"""The fast lane (`pytest -m "not e2e"`) needs no network and no demo model: it holds itself."""

from __future__ import annotations

import pytest

DOWNLOADS = ("demo_gguf", "demo_home")  # fixtures that fetch the 100 MB demo model


def downloading(items: list[pytest.Item]) -> list[str]:
    """The tests among `items` that ask for the demo model without being e2e tests."""
    return [
        f"{item.nodeid} (uses {', '.join(f for f in DOWNLOADS if f in getattr(item, 'fixturenames', ()))})"
        for item in items
        if item.get_closest_marker("e2e") is None
        and any(f in getattr(item, "fixturenames", ()) for f in DOWNLOADS)
    ]


def test_no_test_outside_the_e2e_lane_asks_for_the_demo_model(
    request: pytest.FixtureRequest,
) -> None:
    # Every test this session runs, this one's neighbours included: in the fast lane, all of it.
    found = downloading(request.session.items)
    assert found == [], "use tiny_home / tiny_folder, or mark it e2e:\n" + "\n".join(found)


def test_the_check_finds_a_fast_test_that_asks_for_the_demo_model(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def demo_home(): return 1

@pytest.fixture
def nested(demo_home): return demo_home
"""
    )
    pytester.makepyfile(
        test_fast_lane_check="""
import pytest

def test_fast(nested): pass

@pytest.mark.e2e
def test_slow(demo_home): pass

def test_plain(): pass
"""
    )
    items, _ = pytester.inline_genitems()
    assert downloading(items) == ["test_fast_lane_check.py::test_fast (uses demo_home)"]
