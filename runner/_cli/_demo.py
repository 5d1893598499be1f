"""``demo`` (the sandbox quick start) and ``login FILE`` (the older JSON-only command)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from runner._cli._common import outcome, table
from runner._core._events import Event
from runner._parent._runner import authorize_many
from runner._stores._token_store import TokenStore
from runner.errors import InvalidServerSpec

__all__ = ["demo", "login_json"]


class Printer:
    """Progress lines, each prefixed with the time since start and the server."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        self.say(event.name, str(event))

    def say(self, name: str | None, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{elapsed:7.3f}s  {name or '':<12} {message}", flush=True)


async def demo(servers: int, timeout: float, store_dir: Path) -> int:
    from runner.sandbox import Sandbox, list_tools_with_token  # the demo's servers only

    printer = Printer()
    with Sandbox(servers=servers) as sandbox:
        printer.say(None, f"sandbox up: {servers} MCP server(s) with their authorization servers")
        results = await authorize_many(
            sandbox.config(),
            store=TokenStore(store_dir),
            timeout=timeout,
            browser=sandbox.browser,
            pastes=no_pastes(),
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
                [name, str(result.port or "-"), outcome(result), f"{result.elapsed:.2f}s", proof]
            )
    print()
    print(table(rows))
    good = sum(1 for row in rows[1:] if row[2] == "ok" and row[4].startswith("ok"))
    print(f"\n{good}/{len(results)} logins completed and proven with list_tools", flush=True)
    return 0 if good == len(results) else 1


async def no_pastes() -> Any:
    """The demo's browser is automatic: nothing is read from the terminal."""
    return
    yield  # an empty async generator


async def login_json(config: Path, timeout: float, store_dir: Path | None) -> int:
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
    printer = Printer()
    try:
        results = await authorize_many(
            servers, store=TokenStore(store_dir), timeout=timeout, progress=printer
        )
    except InvalidServerSpec as exc:
        print(f"python -m runner: error: {config}: {exc}", file=sys.stderr)
        return 1
    rows = [["SERVER", "PORT", "OUTCOME", "TIME"]]
    rows += [
        [r.name, str(r.port or "-"), outcome(r), f"{r.elapsed:.2f}s"] for r in results.values()
    ]
    print()
    print(table(rows))
    return 0 if all(r.ok for r in results.values()) else 1
