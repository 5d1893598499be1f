"""What the pytest-xdist workers of one run share, for tests that every worker runs against
one registry or store at the same time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_directory(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """The directory ``name`` that every xdist worker of this run shares (under the run's
    common base temp; per session without xdist), made if it is not there yet."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = root / name
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory
