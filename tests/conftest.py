"""Shared test set-up.

JAX's persistent compilation cache is switched on for the whole run (the two xdist workers and every
`jaxgen` subprocess the tests start share one folder under .pytest_cache): many tests compile the
same smoke-sized train steps, in-process and in subprocesses, and a cache hit replaces a compile.
Set JAX_COMPILATION_CACHE_DIR yourself to move it, or to '' to switch it off.
"""

import os
from pathlib import Path

import pytest

_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))  # before any test imports jax
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

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
