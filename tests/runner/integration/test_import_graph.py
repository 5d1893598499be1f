"""What a login's child and the zygote load, at run time: nothing the child contract forbids.

tests/test_architecture.py checks the contracts on the source; this checks what a fresh
interpreter really has in sys.modules, which also counts imports a static graph cannot see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def child_forbidden() -> list[str]:
    """The modules the "child" import contract keeps out of a login's child."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (child,) = [contract for contract in contracts if contract["id"] == "child"]
    forbidden: list[str] = child["forbidden_modules"]
    return forbidden


def under(name: str, packages: list[str]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["runner._child._login", "runner._child._zygote"])
def test_the_child_does_not_load_the_parent(module: str) -> None:
    forbidden = child_forbidden()
    assert "runner._parent" in forbidden and "portlease" in forbidden
    loaded = modules_after_import(module)
    assert module in loaded
    assert sorted(name for name in loaded if under(name, forbidden)) == []


def test_the_package_loads_its_public_names_on_first_use() -> None:
    loaded = modules_after_import("runner")
    assert "runner._parent._runner" not in loaded
    assert "portlease" not in loaded


PRELOAD_PROBE = """
import json, os, sys, threading
import runner._child._login
fds = sorted(os.listdir("/proc/self/fd"))
before = set(sys.modules)
preloaded = runner._child._login.preload()
print(json.dumps({
    "new": sorted(set(sys.modules) - before),
    "loaded": sorted(sys.modules),
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
    # What each child would otherwise import for itself at its first request and start
    # (the HTTP client's transport comes with the client on some versions, on first use on
    # others; uvicorn's protocol and anyio's backend always on first use).
    assert {"h11", "anyio._backends._asyncio", "uvicorn.protocols.http.h11_impl"} <= loaded
    assert any(name.startswith("httpcore") for name in loaded)
    assert "uvicorn.protocols.http.h11_impl" in seen["new"]
    # Forking after it is safe: no thread started, no descriptor left open.
    assert seen["threads"] == 1
    assert seen["fds_same"] is True
    assert seen["verifies"] == "CERT_REQUIRED"


SUBSET_PROBE = """
import json, sys
from runner._child import _sdk_subset as sdk_subset
first = sdk_subset.load_oauth_client()
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthToken
import runner._child._login
print(json.dumps({
    "first": first,
    "again": sdk_subset.load_oauth_client(),
    "server": sorted(n for n in sys.modules if n.startswith("mcp.server")),
    "session": "mcp.client.session" in sys.modules,
    "token": OAuthToken(access_token="a", token_type="Bearer").access_token,
}))
"""


def test_the_zygote_loads_the_sdks_oauth_client_without_the_rest_of_the_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SUBSET_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["first"] is True
    assert seen["again"] is False  # the SDK is imported now: nothing to do
    assert seen["server"] == []
    assert seen["session"] is False
    assert seen["token"] == "a"
