"""Challenges at any request and client identification, through the runner, on real servers.

A host logs in with ``authorize_many`` and then talks to the server through the SDK's own
client with ``runner.provider`` as its ``auth=``. The sandbox's servers challenge after
``initialize``, ask for more scopes on ``tools/call``, accept only HTTP Basic for a
pre-registered client, and support (or refuse) Client ID Metadata Documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import runner
from portlease import Registry
from runner import ServerSpec, TokenStore, authorize_many
from runner._child._sdk import http as httpx2  # httpx on mcp 1.x
from runner.hermes_store import HermesTokenStore
from runner.sandbox import Sandbox

from support.logins import SandboxBrowser, no_pastes
from support.ports import free_ports

pytestmark = pytest.mark.anyio

DOCUMENT = "https://client.example/oauth/client-metadata.json"


async def session_through(auth: httpx2.Auth, url: str, *, call: bool = False) -> list[str]:
    """initialize, tools/list and (``call``) tools/call through ``auth``; the tools."""
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30, trust_env=False) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = [tool.name for tool in (await session.list_tools()).tools]
        if call:
            await session.call_tool("whoami", {})
    return tools


# --- challenges after initialize ----------------------------------------------------------------


async def test_a_server_that_lets_initialize_through_is_logged_in_at_its_first_challenge(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, open_initialize=True) as sandbox:
        ((name, entry),) = sandbox.config().items()
        store, registry = TokenStore(tmp_path / "tokens"), Registry(tmp_path / "leases")
        browser = SandboxBrowser(sandbox)
        results = await authorize_many(
            sandbox.config(), store=store, registry=registry, browser=browser, pastes=no_pastes()
        )
        result = results[name]
        assert result.ok and result.deferred and result.tokens is None, result
        assert browser.count == 0 and store.load(name) is None

        auth = runner.provider((name, entry), store=store, registry=registry, browser=browser)
        assert await session_through(auth, entry["url"]) == ["whoami"]

        assert browser.count == 1  # at tools/list's 401
        assert sandbox.grant_counts(name)["authorization_code"] == 1
        saved = store.load(name)
        assert saved is not None and saved.tokens.scope == "mcp"  # the challenge's scope


async def test_a_step_up_asks_for_the_scopes_held_and_the_scopes_challenged(
    tmp_path: Path,
) -> None:
    with Sandbox(servers=1, step_up_scope="admin") as sandbox:
        ((name, entry),) = sandbox.config().items()
        store, registry = TokenStore(tmp_path / "tokens"), Registry(tmp_path / "leases")
        browser = SandboxBrowser(sandbox)
        results = await authorize_many(
            sandbox.config(), store=store, registry=registry, browser=browser, pastes=no_pastes()
        )
        assert results[name].ok

        auth = runner.provider((name, entry), store=store, registry=registry, browser=browser)
        await session_through(auth, entry["url"], call=True)  # tools/call: 403, then a step-up

        assert browser.count == 2
        saved = store.load(name)
        assert saved is not None and set((saved.tokens.scope or "").split()) == {"mcp", "admin"}
        again = runner.provider((name, entry), store=store, registry=registry, browser=browser)
        await session_through(again, entry["url"], call=True)  # the stepped-up token works
        assert browser.count == 2


# --- client identification ----------------------------------------------------------------------


@pytest.mark.parametrize("method", [None, "client_secret_basic"])
async def test_a_preregistered_client_authenticates_as_the_server_accepts(
    tmp_path: Path, method: str | None
) -> None:
    client = ("pre-registered", "its-secret", "client_secret_basic")
    with Sandbox(
        servers=1,
        preregistered=client,
        registration=False,
        auth_methods=("client_secret_basic",),
    ) as sandbox:
        server = sandbox.servers[0]
        spec = ServerSpec(
            name=server.name,
            url=server.url,
            client_id="pre-registered",
            client_secret="its-secret",
            token_endpoint_auth_method=method,  # None: chosen from the server's metadata
        )
        store = TokenStore(tmp_path / "tokens")
        results = await authorize_many(
            [spec],
            store=store,
            registry=Registry(tmp_path / "leases"),
            browser=sandbox.browser,
            pastes=no_pastes(),
        )
        assert results[server.name].ok, results[server.name].error
        saved = store.load(server.name)
        assert saved is not None and saved.client_info is not None
        assert saved.client_info.token_endpoint_auth_method == "client_secret_basic"
        assert sandbox.authorized_client_ids(server.name) == ["pre-registered"]


async def test_a_client_metadata_document_is_the_client_id_on_one_of_its_ports(
    tmp_path: Path,
) -> None:
    # The document's fixed redirect ports: free ones, since the default ones (hermes's) may
    # be taken by another test running at the same time.
    ports = frozenset(free_ports(3))
    with Sandbox(servers=1, cimd="accept", cimd_ports=tuple(sorted(ports))) as sandbox:
        server = sandbox.servers[0]
        spec = ServerSpec(
            name=server.name,
            url=server.url,
            client_metadata_url=DOCUMENT,
            client_metadata_ports=ports,
        )
        results = await authorize_many(
            [spec],
            store=TokenStore(tmp_path / "tokens"),
            registry=Registry(tmp_path / "leases"),
            browser=sandbox.browser,
            pastes=no_pastes(),
        )
        result = results[server.name]
        assert result.ok, result.error
        assert result.port in ports
        assert sandbox.authorized_client_ids(server.name) == [DOCUMENT]


async def test_a_refused_document_is_marked_as_hermes_marks_it_and_registration_follows(
    tmp_path: Path,
) -> None:
    ports = frozenset(free_ports(3))
    with Sandbox(servers=1, cimd="refuse", cimd_ports=tuple(sorted(ports))) as sandbox:
        server = sandbox.servers[0]
        spec = ServerSpec(
            name="notes",
            url=server.url,
            client_metadata_url=DOCUMENT,
            client_metadata_ports=ports,
        )
        store = HermesTokenStore(tmp_path / "hermes", server_urls={"notes": server.url})
        browser = SandboxBrowser(sandbox)

        async def login() -> Any:
            return (
                await authorize_many(
                    [spec],
                    store=store,
                    registry=Registry(tmp_path / "leases"),
                    browser=browser,
                    pastes=no_pastes(),
                )
            )["notes"]

        result = await login()
        assert result.ok, result.error
        marker = tmp_path / "hermes" / "mcp-tokens" / "notes.cimd-off"
        assert marker.is_file() and marker.read_bytes() == b""  # as hermes writes it
        ids = sandbox.authorized_client_ids(server.name)
        assert ids[0] == DOCUMENT and len(ids) == 2 and ids[1] != DOCUMENT

        # Logged out and in again: the mark is cleared with the login, as hermes's remove
        # does, so a fixed document is tried again.
        assert store.logout("notes")
        assert not marker.exists()
