"""``demo`` (the sandbox quick start) and ``login FILE`` (the older JSON-only command)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._cli._common import outcome, table
from runner._cli._errors import CommandError, printable
from runner._cli._flow import with_flow
from runner._core._entries import parse_servers
from runner._core._events import DeviceCodeIssued, Event
from runner._core._remote import remote_without_display, tunnel_hint
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
        print(f"{elapsed:7.3f}s  {printable(name or ''):<12} {printable(message)}", flush=True)


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


def login_json(
    config: Path,
    timeout: float,
    store_dir: Path | None,
    flow: str | None = None,
    no_browser: bool = False,
) -> int:
    """``login FILE``: a ``.json`` file of servers (``{"name": {"url": ...}}``, or the same
    under ``"mcp_servers"``), read with the library's rules as before (an entry without
    ``auth`` is an OAuth login); any other file is a hermes ``config.yaml``, read as
    ``authorize`` reads it (``read_hermes_config``: hermes's rules, skipped entries said).
    Either is read bounded, without blocking. ``no_browser``: the URLs are printed, no
    browser is opened; over SSH with no display none is opened either, and each URL comes
    after the ``ssh -L`` line that carries its port (``runner._core._remote``).

    Raises:
        CommandError, InvalidServerSpec: the file is missing, unreadable or not a config
            (one line; exit code 2).
    """
    import anyio

    from runner._hosts._hermes_config import read_config_data, read_hermes_config

    servers: Any
    if config.suffix == ".json":
        servers = read_config_data(config)
        if isinstance(servers, dict) and isinstance(servers.get("mcp_servers"), dict):
            servers = servers["mcp_servers"]
        if not isinstance(servers, dict):
            raise CommandError(f"{config}: must hold an object of servers")
        try:
            servers = parse_servers(servers)
        except InvalidServerSpec as exc:
            raise CommandError(f"{config}: {exc}") from None
    else:
        hermes = read_hermes_config(config)
        for name, reason in hermes.skipped:
            print(f"{printable(name)}: skipped: {printable(reason)}", flush=True)
        servers = hermes.specs
        if not servers:
            print(f"no OAuth servers in {printable(str(config))}: nothing to log in to")
            return 0
    servers = with_flow(servers, flow)  # --flow: every server's flow
    return anyio.run(_login, servers, timeout, TokenStore(store_dir), no_browser)


def printing_browser(printer: Printer, env: Mapping[str, str]) -> Callable[[str, ServerSpec], None]:
    """A ``browser=`` that prints the URL (after the ``ssh -L`` line when over SSH with no
    display) and opens nothing."""
    from runner._cli._authorize import local_user

    def browser(url: str, spec: ServerSpec) -> None:
        for line in tunnel_hint(env, url, local_user(env)) or ():
            printer.say(spec.name, line)
        printer.say(spec.name, f"open this URL to log in: {url}")

    return browser


async def _login(
    servers: list[ServerSpec], timeout: float, store: TokenStore, no_browser: bool = False
) -> int:
    printer = Printer()
    env = os.environ
    # None: the runner's own (print, then the system browser); over SSH with no display
    # there is none to open, and the person needs the tunnel's line.
    browser = printing_browser(printer, env) if no_browser or remote_without_display(env) else None
    results = await authorize_many(
        servers, store=store, timeout=timeout, progress=printer, browser=browser
    )
    rows = [["SERVER", "PORT", "OUTCOME", "TIME"]]
    rows += [
        [r.name, str(r.port or "-"), outcome(r), f"{r.elapsed:.2f}s"] for r in results.values()
    ]
    print()
    print(table(rows))
    return 0 if all(r.ok for r in results.values()) else 1
