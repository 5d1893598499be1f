"""What a login's child and the zygote load: never the parent's supervisor, never portlease.

A fresh interpreter per module, so nothing this test process imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PARENT_ONLY = (
    "runner.flows",
    "runner.supervisor",
    "runner.routing",
    "runner.store",
    "portlease",
)


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["runner.child", "runner.zygote"])
def test_the_child_does_not_load_the_parent(module: str) -> None:
    loaded = modules_after_import(module)
    assert module in loaded
    assert sorted(name for name in PARENT_ONLY if name in loaded) == []


def test_the_package_loads_its_public_names_on_first_use() -> None:
    loaded = modules_after_import("runner")
    assert "runner.flows" not in loaded
    assert "portlease" not in loaded
