"""Every import the README and docs/hosts.md show works, and every public name they promise is
there: moving a module into a private layer must not break a host that followed the docs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/hosts.md")
OURS = ("runner", "portlease", "statefiles")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def documented_imports(document: str) -> list[str]:
    """The import statements of our packages in a document's Python blocks (a block need not
    run as a whole: it may await at top level or use names it does not define)."""
    imports: list[str] = []
    for block in PYTHON_BLOCK.findall((ROOT / document).read_text(encoding="utf-8")):
        tree = ast.parse(block.replace("await ", ""))  # top-level awaits: examples, not code
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            if any(module.split(".")[0] in OURS for module in modules):
                imports.append(ast.unparse(node))
    return imports


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_documented_import_works(document: str) -> None:
    imports = documented_imports(document)
    assert imports, f"{document} shows no import of {OURS}: is the block syntax still ```python?"
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(imports)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# Public names hosts use, by the module the docs name (README, hosts.md, architecture.md's
# "Layers and contracts"): each must stay importable from there.
PUBLIC = {
    "runner": [
        "FlowResult", "Runner", "RunnerProvider", "ServerSpec", "TokenStore",
        "authorize_many", "authorize_many_sync", "provider", "logout", "logout_sync",
    ],
    "runner.errors": [
        "FlowError", "AuthorizationDenied", "FlowTimeout", "CallbackPortBusy",
        "NeedsInteraction", "FlowCrashed", "OAuthProtocolError", "RefreshFailed",
        "RefreshRefused", "AccessRefused", "LoginLockUnavailable", "InvalidServerSpec",
        "HostCallbackWarning", "LoginCleanupWarning", "TokenStoreError", "TokenStoreWarning",
        "LoginLockTimeout", "HermesConfigError", "LauncherError", "ClientMetadataRefused",
        "ServerUnreachable", "NotALoginFile", "RevocationWarning",
    ],
    "runner.events": ["Event", "Finished", "WaitingForBrowser", "PasteRefused", "DeviceCodeIssued"],
    "runner.store": [
        "TokenStore", "StoredLogin", "StoreTokenStorage", "TokenStoreError",
        "TokenStoreWarning", "LoginLockTimeout", "InvalidLoginRecord",
    ],
    "runner.hermes_store": ["HermesTokenStore"],
    "runner.hermes_config": ["read_hermes_config", "default_hermes_home", "HermesConfig"],
    "runner.sandbox": ["Sandbox", "list_tools_with_token"],
    "portlease": ["Registry", "PortBusy", "LeaseTimeout"],
    "statefiles": ["read_state_file", "decode_json", "lock_file", "UnreadableStateFile"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_stay_where_the_docs_put_them(module: str) -> None:
    names = ", ".join(PUBLIC[module])
    done = subprocess.run(
        [sys.executable, "-c", f"from {module} import {names}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_error_of_runner_is_in_its_one_module_under_its_documented_roots() -> None:
    """A login's outcomes are ``FlowError``s, the stores' method errors ``TokenStoreError``s,
    the contained failures ``UserWarning``s; all in ``runner.errors``, nothing else."""
    from runner import errors

    classes = [getattr(errors, name) for name in errors.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, BaseException | Warning)]
    roots = (errors.FlowError, errors.TokenStoreError, UserWarning)
    assert [c.__name__ for c in classes if not issubclass(c, roots)] == []
    assert all(c.__module__ == "runner.errors" for c in classes)
    assert issubclass(errors.LauncherError, errors.FlowCrashed)  # out of Runner.warm_up
    assert issubclass(errors.HermesConfigError, errors.InvalidServerSpec)
