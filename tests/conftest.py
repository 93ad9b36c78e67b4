from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def test_data():
    """The small real data committed with the tests (tests/data: 500 MNIST digits, 4 KB of text)."""
    return TEST_DATA


@pytest.fixture
def shared_data():
    """The full data sets beside the checkout (../shared/data), for tests that need all of them.

    Skipped where absent: a clone of the repository alone has only tests/data. No test uses it today;
    benchmarks read ../shared themselves.
    """
    if not SHARED.is_dir():
        pytest.skip(f"needs the full data sets in {SHARED} (absent: a clone has only tests/data)")
    return SHARED
