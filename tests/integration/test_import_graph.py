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


PRELOAD_PROBE = """
import json, os, sys, threading
import runner.child
fds = sorted(os.listdir("/proc/self/fd"))
before = set(sys.modules)
preloaded = runner.child.preload()
print(json.dumps({
    "loaded": sorted(set(sys.modules) - before),
    "threads": threading.active_count(),
    "fds_same": sorted(os.listdir("/proc/self/fd")) == fds,
    "verifies": preloaded.tls.verify_mode.name,
}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")
def test_preload_loads_what_a_child_would_and_leaves_it_safe_to_fork() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRELOAD_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    loaded = set(seen["loaded"])
    # What each child would otherwise import for itself at its first request and start.
    assert "h11" in loaded
    assert "uvicorn.protocols.http.h11_impl" in loaded
    assert any(name.startswith("httpcore") for name in loaded)
    # Forking after it is safe: no thread started, no descriptor left open.
    assert seen["threads"] == 1
    assert seen["fds_same"] is True
    assert seen["verifies"] == "CERT_REQUIRED"
