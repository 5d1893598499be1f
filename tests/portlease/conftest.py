"""Fixtures of the portlease tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from portlease import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A registry in a directory of the test's own."""
    return Registry(tmp_path / "registry")
