"""Fixtures of the snippet tests."""

from __future__ import annotations

import pytest

from tests.servers import require_command


@pytest.fixture(scope="session")
def node() -> str:
    """The Node.js executable (skipped when missing, a failure under CI=true)."""
    return require_command("node")
