"""A host between logins: log in with ``authorize_many``, then use the MCP SDK's own client.

    python examples/host.py                  # against the embedded sandbox (loopback only)
    python examples/host.py servers.json     # against the servers of a hermes-style config
    python examples/host.py config.yaml      # against the OAuth servers of hermes's config

Against the sandbox (the default), whose access tokens live ``--ttl`` seconds:

1. ``authorize_many`` logs in (a child process on a leased port; the sandbox's automated
   consent browser plays the person);
2. one session of the SDK's streamable-HTTP client, with ``runner.provider(...)`` as its
   ``auth``, calls ``list_tools``;
3. the script waits until the access token has expired (the point of the demo; bounded);
4. the same session calls ``list_tools`` again: the provider refreshed the token on the way,
   in this process, under the store's lock, and saved it.

It prints what the authorization server saw and exits 0 only when exactly one refresh grant
happened and no browser was opened after the first login.

With a config (a JSON file ``{"name": {"url": ..., "oauth": {...}}}``, or the same under
``"mcp_servers"``; or a hermes ``config.yaml``, read as ``mcp-oauth`` reads it) it logs in to
every server (the system browser, when one must be opened)
and lists each one's tools through ``runner.provider``; tokens are kept in ``--store``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import runner
from runner import TokenStore, authorize_many
from runner._child._sdk import http as sdk_http  # httpx2 on mcp 2.x, httpx on 1.x
from runner.hermes_config import read_hermes_config

#: The longest the demo waits for a token to expire, whatever --ttl says.
MAX_WAIT = 30.0


def say(message: str) -> None:
    print(f"host: {message}", flush=True)


async def no_pastes() -> AsyncIterator[str]:
    """Nothing is read from the terminal: the sandbox's browser is automatic."""
    return
    yield  # an empty async generator


async def list_tools(session: ClientSession) -> list[str]:
    result = await session.list_tools()
    return [tool.name for tool in result.tools]


async def sandbox_demo(ttl: int, timeout: float) -> int:
    from runner.sandbox import Sandbox  # the demo's servers only

    with (
        tempfile.TemporaryDirectory(prefix="runner-host-") as tmp,
        Sandbox(servers=1, access_token_ttl=ttl) as sandbox,
    ):
        store = TokenStore(Path(tmp) / "tokens")
        ((name, entry),) = sandbox.config().items()
        say(f"sandbox up: {name} at {entry['url']}; access tokens live {ttl} s")
        results = await authorize_many(
            sandbox.config(),
            store=store,
            browser=sandbox.browser,
            pastes=no_pastes(),
            timeout=timeout,
        )
        if not results[name].ok:
            say(f"login FAILED: {results[name].error}")
            return 1
        browsed = sandbox.browser_calls
        say(f"logged in through the runner (browser opened {browsed} time(s))")

        auth = runner.provider((name, entry), store=store, browser=sandbox.browser, timeout=timeout)
        async with (
            sdk_http.AsyncClient(auth=auth, timeout=timeout, trust_env=False) as http,
            streamable_http_client(entry["url"], http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            say(f"list_tools: {', '.join(await list_tools(session))}")
            before = dict(sandbox.grant_counts(name))
            expiry = auth.context.token_expiry_time or time.time()
            wait = min(MAX_WAIT, max(0.0, expiry - time.time()) + 0.5)
            say(f"waiting {wait:.1f} s for the access token to expire")
            await anyio.sleep(wait)
            say(f"list_tools after the expiry: {', '.join(await list_tools(session))}")
        counts = dict(sandbox.grant_counts(name))
        stored = await anyio.to_thread.run_sync(store.load, name)  # file I/O: off the loop
        saved = stored is not None and stored.tokens.access_token == (
            auth.context.current_tokens.access_token if auth.context.current_tokens else None
        )
        opened = sandbox.browser_calls - browsed

    refreshes = counts["refresh_token"] - before["refresh_token"]
    say(
        f"authorization server saw: {counts['authorize']} authorize, "
        f"{counts['authorization_code']} code exchange(s), {counts['refresh_token']} refresh "
        f"grant(s) ({refreshes} across the expiry); browser opened {opened} time(s) after "
        f"the login; refreshed tokens saved: {'yes' if saved else 'no'}"
    )
    good = (
        counts["refresh_token"] == 1
        and refreshes == 1
        and counts["authorize"] == 1
        and opened == 0
        and saved
    )
    say("OK: one refresh grant, no browser" if good else "FAILED: expected one refresh, no browser")
    return 0 if good else 1


#: One server of a config: a hermes config's ``ServerSpec``, or a JSON file's (name, entry).
Server = runner.ServerSpec | tuple[str, Mapping[str, Any]]


def read_config(path: Path) -> list[Server]:
    """The servers of ``path``: a ``.json`` file of hermes-style entries (read with the
    library's rules: ``auth`` may be left out), else a hermes ``config.yaml``, read as
    ``mcp-oauth`` reads it (``runner.hermes_config.read_hermes_config``: bounded, hermes's
    rules and ``${VAR}`` interpolation; its non-OAuth servers are left out)."""
    if path.suffix != ".json":
        config = read_hermes_config(path)
        for name, reason in config.skipped:
            say(f"{name!r}: skipped: {reason}")
        return list(config.specs)
    servers = json.loads(path.read_text())
    if isinstance(servers, dict) and isinstance(servers.get("mcp_servers"), dict):
        servers = servers["mcp_servers"]
    if not isinstance(servers, dict):
        raise ValueError("expected an object of servers")
    return list(servers.items())


def server_name(server: Server) -> str:
    return server.name if isinstance(server, runner.ServerSpec) else server[0]


async def config_hosts(config: Path, store_dir: Path | None, timeout: float) -> int:
    try:
        servers = read_config(config)
    except (OSError, ValueError) as exc:  # HermesConfigError is a ValueError too
        say(f"cannot read {config}: {exc}")
        return 2
    store = TokenStore(store_dir)
    specs = [s for s in servers if isinstance(s, runner.ServerSpec)]
    entries = {s[0]: s[1] for s in servers if not isinstance(s, runner.ServerSpec)}
    results = await authorize_many(specs or entries, store=store, timeout=timeout)
    failed = 0
    for server in servers:
        name = server_name(server)
        if not results[name].ok:
            say(f"{name}: login FAILED: {results[name].error}")
            failed += 1
            continue
        auth = runner.provider(server, store=store, timeout=timeout)
        try:
            async with (
                sdk_http.AsyncClient(auth=auth, timeout=timeout) as http,
                streamable_http_client(auth.spec.url, http_client=http) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                say(f"{name}: list_tools: {', '.join(await list_tools(session))}")
        except Exception as exc:
            say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            failed += 1
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "config", type=Path, nargs="?", help="hermes-style JSON servers, or a hermes config.yaml"
    )
    parser.add_argument("--store", type=Path, default=None, help="token directory (config)")
    parser.add_argument("--ttl", type=int, default=3, help="sandbox token lifetime, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per login")
    args = parser.parse_args(argv)
    if not 1 <= args.ttl <= MAX_WAIT:
        parser.error(f"--ttl must be between 1 and {MAX_WAIT:g}")
    if args.config is None:
        return anyio.run(sandbox_demo, args.ttl, args.timeout)
    return anyio.run(config_hosts, args.config, args.store, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
