"""``python -m runner``: the demo, and logging in to servers from a JSON config.

``demo`` starts the sandbox (a local authorization server and MCP servers on
loopback, no account, no network), logs in to all of them at once through the real
path (leases, child processes, callbacks) and proves each token with ``list_tools``.
``login`` logs in to the servers of a hermes-style JSON file, through the system
browser (or pasted callback URLs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from runner.errors import InvalidServerSpec
from runner.flows import authorize_many
from runner.spec import FlowResult
from runner.store import TokenStore

__all__ = ["main"]


class _Printer:
    """Progress lines, each prefixed with the time since start and the server."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, name: str | None, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{elapsed:7.3f}s  {name or '':<12} {message}", flush=True)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _outcome(result: FlowResult) -> str:
    if result.ok:
        return "ok"
    assert result.error is not None
    return f"{type(result.error).__name__}: {result.error}"


async def _demo(servers: int, timeout: float, store_dir: Path) -> int:
    from runner.sandbox import Sandbox, list_tools_with_token  # the demo's servers only

    printer = _Printer()
    with Sandbox(servers=servers) as sandbox:
        printer(None, f"sandbox up: {servers} MCP server(s) with their authorization servers")
        results = await authorize_many(
            sandbox.config(),
            store=TokenStore(store_dir),
            timeout=timeout,
            browser=sandbox.browser,
            pastes=_no_pastes(),
            progress=printer,
        )
        urls = {server.name: server.url for server in sandbox.servers}
        rows = [["SERVER", "PORT", "OUTCOME", "TIME", "LIST_TOOLS"]]
        for name, result in results.items():
            proof = "-"
            if result.ok and result.tokens is not None:
                try:
                    tools = await list_tools_with_token(urls[name], result.tokens.access_token)
                    proof = f"ok ({', '.join(tools)})"
                except Exception as exc:
                    proof = f"FAILED: {type(exc).__name__}: {exc}"
            rows.append(
                [name, str(result.port or "-"), _outcome(result), f"{result.elapsed:.2f}s", proof]
            )
    print()
    print(_table(rows))
    good = sum(1 for row in rows[1:] if row[2] == "ok" and row[4].startswith("ok"))
    print(f"\n{good}/{len(results)} logins completed and proven with list_tools", flush=True)
    return 0 if good == len(results) else 1


async def _no_pastes() -> Any:
    """The demo's browser is automatic: nothing is read from the terminal."""
    return
    yield  # an empty async generator


async def _login(config: Path, timeout: float, store_dir: Path | None) -> int:
    try:
        servers = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        print(f"python -m runner: error: cannot read {config}: {exc}", file=sys.stderr)
        return 1
    if isinstance(servers, dict) and isinstance(servers.get("mcp_servers"), dict):
        servers = servers["mcp_servers"]
    if not isinstance(servers, dict):
        print(
            f"python -m runner: error: {config} must hold an object of servers",
            file=sys.stderr,
        )
        return 1
    printer = _Printer()
    try:
        results = await authorize_many(
            servers, store=TokenStore(store_dir), timeout=timeout, progress=printer
        )
    except InvalidServerSpec as exc:
        print(f"python -m runner: error: {config}: {exc}", file=sys.stderr)
        return 1
    rows = [["SERVER", "PORT", "OUTCOME", "TIME"]]
    rows += [
        [r.name, str(r.port or "-"), _outcome(r), f"{r.elapsed:.2f}s"] for r in results.values()
    ]
    print()
    print(_table(rows))
    return 0 if all(r.ok for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="log in to N local sandbox servers at once")
    demo.add_argument("--servers", type=int, default=4, metavar="N", help="default: 4")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds per login")
    login = commands.add_parser("login", help="log in to the servers of a JSON config")
    login.add_argument("config", type=Path, help='{"name": {"url": ..., "oauth": {...}}}')
    login.add_argument("--timeout", type=float, default=300.0, help="seconds per login")
    login.add_argument("--store", type=Path, default=None, help="token directory")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        if args.command == "demo":
            if not 1 <= args.servers <= 64:
                parser.error("--servers must be between 1 and 64")
            with tempfile.TemporaryDirectory(prefix="runner-demo-") as tmp:
                return anyio.run(_demo, args.servers, args.timeout, Path(tmp))
        return anyio.run(_login, args.config, args.timeout, args.store)
    except KeyboardInterrupt:
        print("\ninterrupted: every login was stopped", file=sys.stderr)
        return 130
