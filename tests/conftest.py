"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The event loop of every ``pytest.mark.anyio`` test: asyncio, as the runner's hosts and
    the sandbox use (anyio's own default would also run each test on every other backend it
    finds installed)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _not_over_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as on a local machine, whether or not pytest runs in an SSH session:
    over SSH with no display the command line opens no browser (``runner._core._remote``),
    which tests that drive a ``$BROWSER`` rely on. Tests of the remote case set these."""
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.delenv("SSH_CLIENT", raising=False)
