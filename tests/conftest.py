import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """The real data beside the checkout (../shared/data); skipped where it is absent."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests expect ../shared/data beside the checkout")
    return SHARED
