"""The conformance suite's client, as a host uses this project: the adapter under test.

``python scripts/conformance/host_client.py <server url>``, started by the official MCP
conformance suite (``@modelcontextprotocol/conformance``) once per client scenario, with the
scenario's name in ``MCP_CONFORMANCE_SCENARIO`` and its context (pre-registered
credentials) in ``MCP_CONFORMANCE_CONTEXT``.

It does what hermes-agent does at start-up and then for hours: ``runner.authorize_many``
logs in to the server (a child process on a leased loopback port; the "browser" follows the
authorization server's redirect to that port, as a person's would), then the SDK's own
client (``ClientSession`` over ``streamable_http_client``) talks to the server with
``runner.provider`` as its ``auth=``: ``initialize``, ``tools/list`` and a ``tools/call``,
which is what meets a step-up challenge. Tokens live in a token store and port leases in a
registry of its own, in a temporary directory.

The configuration is the one the bare SDK's baseline client (``bare_client.py``) gets:
the pre-registered client of ``auth/pre-registration``, and a Client ID Metadata Document
only for ``auth/basic-cimd`` (elsewhere the suite would try to fetch the document's URL, a
host that is not on this machine). Exit 0 when every step worked, 1 otherwise (the suite
judges by the requests it saw, not by the exit code).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import runner
from portlease import Registry
from runner import ServerSpec, TokenStore

#: The client id ``auth/basic-cimd`` expects (the suite hard-codes it) and the loopback
#: ports a document would name (hermes-agent's).
CIMD_URL = "https://conformance-test.local/client-metadata.json"
CIMD_PORTS = frozenset(range(27890, 27895))
TIMEOUT = 60.0

log = logging.getLogger("host_client")


def spec_for(url: str, scenario: str, context: dict[str, Any]) -> ServerSpec:
    """The server as a host's configuration would name it for ``scenario``."""
    options: dict[str, Any] = {}
    if context.get("client_id"):
        options["client_id"] = context["client_id"]
        options["client_secret"] = context.get("client_secret")
    if scenario == "auth/basic-cimd":
        options["client_metadata_url"] = CIMD_URL
        options["client_metadata_ports"] = CIMD_PORTS
    return ServerSpec(name="server", url=url, timeout=TIMEOUT, **options)


def browser(url: str, spec: ServerSpec) -> None:
    """A person's browser: the suite's authorization server consents at once and redirects
    to the login's loopback listener, which the browser then visits with the callback."""
    with httpx2.Client(follow_redirects=False, timeout=10.0, trust_env=False) as client:
        consent = client.get(url)
        location = consent.headers.get("location")
        if consent.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(f"the authorization endpoint answered {consent.status_code}")
        callback = urljoin(url, location)
        if urlsplit(callback).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise RuntimeError("the redirect leaves this machine")
        client.get(callback)


async def no_pastes() -> Any:
    return
    yield  # pragma: no cover - an empty async generator


async def run(url: str, scenario: str, context: dict[str, Any], home: Path) -> None:
    spec = spec_for(url, scenario, context)
    store = TokenStore(home / "tokens")
    registry = Registry(home / "leases")
    results = await runner.authorize_many(
        [spec], store=store, registry=registry, browser=browser, pastes=no_pastes()
    )
    result = results[spec.name]
    log.info("authorize_many: %s", result)
    if not result.ok:
        raise RuntimeError(f"login failed: {type(result.error).__name__}: {result.error}")
    auth = runner.provider(spec, store=store, registry=registry, browser=browser, timeout=TIMEOUT)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=TIMEOUT, trust_env=False) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        log.info("tools: %s", [tool.name for tool in tools])
        if tools:
            await session.call_tool(tools[0].name, {})
            log.info("called %s", tools[0].name)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory(prefix="conformance-host-") as home:
        try:
            anyio.run(run, url, scenario, context, Path(home))
        except Exception as exc:
            log.exception("%s: %s: %s", scenario, type(exc).__name__, exc)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
