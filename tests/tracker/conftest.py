"""Fixtures of the standalone tracker tests."""

from __future__ import annotations

import pytest

from tests.tracker.test_reference_client import PAGE, Recorder


@pytest.fixture
def tracker() -> Recorder:
    """A tracker that records its hits instead of sending them, on page ``PAGE``."""
    t = Recorder()
    t.set(url=PAGE)
    return t
