"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The event loop of every ``pytest.mark.anyio`` test: asyncio, as the runner's hosts and
    the sandbox use (anyio's own default would also run each test on every other backend it
    finds installed)."""
    return "asyncio"
