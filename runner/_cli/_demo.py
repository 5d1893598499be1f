"""``demo`` (the sandbox quick start) and ``login FILE`` (the older JSON-only command)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._cli._common import outcome, table
from runner._cli._flow import with_flow
from runner._core._entries import parse_servers
from runner._core._events import DeviceCodeIssued, Event
from runner._core._spec import ServerSpec
from runner._parent._runner import authorize_many
from runner._stores._token_store import TokenStore
from runner.errors import InvalidServerSpec

if TYPE_CHECKING:
    from runner.sandbox import SandboxServer

__all__ = ["demo", "login_json"]


class Printer:
    """Progress lines, each prefixed with the time since start and the server."""

    def __init__(self, approve: Callable[[str], object] | None = None) -> None:
        self.started = time.monotonic()
        self.approve = approve

    def __call__(self, event: Event) -> None:
        self.say(event.name, str(event))
        if isinstance(event, DeviceCodeIssued) and self.approve is not None:
            # The demo's person: reads the code off the screen and enters it on "another
            # device" (the sandbox's verification page, simulated), as a person would.
            self.say(event.name, f"(the sandbox's simulated person enters {event.user_code})")
            self.approve(event.user_code)

    def say(self, name: str | None, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{elapsed:7.3f}s  {name or '':<12} {message}", flush=True)


async def demo(servers: int, timeout: float, store_dir: Path) -> int:
    from runner.sandbox import Sandbox, list_tools_with_token  # the demo's servers only

    with Sandbox(servers=servers, device=True) as sandbox:
        printer = Printer(approve=sandbox.approve_device)
        printer.say(None, f"sandbox up: {servers} MCP server(s) with their authorization servers")
        results = await authorize_many(
            _demo_specs(sandbox.servers),
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


def _demo_specs(servers: list[SandboxServer]) -> list[ServerSpec]:
    """The sandbox's servers to log in to: by browser, but the last one (of two or more) by
    device flow (RFC 8628), to show both side by side."""
    device = len(servers) - 1 if len(servers) > 1 else -1
    return [
        ServerSpec(name=server.name, url=server.url, flow="device" if i == device else "browser")
        for i, server in enumerate(servers)
    ]


async def no_pastes() -> Any:
    """The demo's browser is automatic: nothing is read from the terminal."""
    return
    yield  # an empty async generator


async def login_json(
    config: Path, timeout: float, store_dir: Path | None, flow: str | None = None
) -> int:
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
        specs = with_flow(parse_servers(servers), flow)  # --flow: every server's flow
        results = await authorize_many(
            specs, store=TokenStore(store_dir), timeout=timeout, progress=printer
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
