"""The sandbox against the MCP SDK's own OAuth client: real servers on 127.0.0.1, no mocks.

Every login here is the SDK's ``OAuthClientProvider`` (discovery, registration, PKCE, token
exchange) with ``Sandbox.browser`` as the browser and a small callback listener that the test
runs on its own port-0 socket, in the test's event loop (support.sdk_client).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from contextlib import closing
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthToken

from runner._child._sdk import SDK_CHECKS_ISS
from runner._child._sdk import (
    http as sdk_http,  # the SDK's own HTTP client: httpx2 on 2.x, httpx on 1.x
)
from runner.sandbox import (
    Behaviour,
    BrowserError,
    CallbackUnreachable,
    Sandbox,
    SandboxError,
    TokenRejected,
    list_tools_with_token,
    whoami_with_token,
)

from support.sdk_client import (
    FLOW_DEADLINE,
    CallbackError,
    Login,
    as_metadata,
    callback_listener,
    sdk_login,
    sdk_provider,
)

pytestmark = pytest.mark.anyio


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return None


# -- tests ---------------------------------------------------------------------------------------


async def test_full_login_with_the_sdk_client_ends_with_working_tokens() -> None:
    with Sandbox(servers=1, access_token_ttl=900) as sb:
        server = sb.servers[0]
        login = Login()
        async with callback_listener() as listener:
            provider = sdk_provider(sb, server, listener, login)
            with anyio.fail_after(FLOW_DEADLINE):
                async with (
                    sdk_http.AsyncClient(auth=provider, timeout=10.0) as http,
                    streamable_http_client(server.url, http_client=http) as (read, write, *_),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == ["whoami"]

        tokens = login.storage.tokens
        assert tokens is not None
        assert tokens.refresh_token
        assert tokens.expires_in == 900
        assert tokens.scope == "mcp"
        assert login.browser_statuses == [200]
        assert sb.browser_calls == 1
        (callback,) = login.callbacks
        assert callback["state"] == login.sent_state
        assert callback["iss"] == server.issuer
        assert sb.issued_tokens(server.name) == {tokens.access_token}

        assert await list_tools_with_token(server.url, tokens.access_token) == ["whoami"]
        assert await whoami_with_token(server.url, tokens.access_token) == server.name
        with pytest.raises(TokenRejected) as rejected:
            await list_tools_with_token(server.url, "not-a-token")
        assert rejected.value.status == 401


async def test_refresh_tokens_rotate() -> None:
    with Sandbox(servers=1) as sb:
        server = sb.servers[0]
        login = await sdk_login(sb, server)
        tokens, client = login.storage.tokens, login.storage.client_info
        assert tokens is not None
        assert tokens.refresh_token
        assert client is not None
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": client.client_id,
        }
        async with httpx.AsyncClient(trust_env=False) as http:
            first = await http.post(f"{server.issuer}/token", data=form)
            again = await http.post(f"{server.issuer}/token", data=form)
        assert first.status_code == 200, first.text
        fresh = OAuthToken.model_validate_json(first.content)
        assert fresh.refresh_token not in (None, tokens.refresh_token)
        assert fresh.access_token != tokens.access_token
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
        assert sb.issued_tokens(server.name) == {tokens.access_token, fresh.access_token}
        assert await whoami_with_token(server.url, fresh.access_token) == server.name


async def test_a_token_of_one_server_is_refused_by_another() -> None:
    with Sandbox(servers=2) as sb:
        a, b = sb.servers
        login = await sdk_login(sb, a)
        assert login.storage.tokens is not None
        token = login.storage.tokens.access_token
        assert await whoami_with_token(a.url, token) == a.name
        with pytest.raises(TokenRejected) as rejected:
            await list_tools_with_token(b.url, token)
        assert rejected.value.status == 401
        assert token in sb.issued_tokens(a.name)
        assert sb.issued_tokens(b.name) == set()


async def test_denied_consent_reaches_the_callback_as_access_denied() -> None:
    overrides = {"sandbox-2": Behaviour(consent="deny")}
    with Sandbox(servers=2, overrides=overrides) as sb:
        approving, denying = sb.servers
        assert denying.behaviour.consent == "deny"
        login = Login()
        with pytest.raises(CallbackError):
            await sdk_login(sb, denying, login=login)
        (callback,) = login.callbacks
        assert callback["error"] == "access_denied"
        assert callback["error_description"]
        assert callback["state"] == login.sent_state
        assert callback["iss"] == denying.issuer
        assert "code" not in callback
        assert login.browser_statuses == [200]
        assert sb.issued_tokens(denying.name) == set()
        # The other server, same sandbox, still approves.
        approved = await sdk_login(sb, approving)
        assert approved.storage.tokens is not None


@pytest.mark.parametrize(
    ("knobs", "advertised", "iss", "sdk_accepts"),
    [
        pytest.param({}, True, "issuer", True, id="default"),
        pytest.param({"wrong_iss": True}, True, "other", False, id="wrong_iss"),
        pytest.param({"send_iss": False}, True, None, False, id="no_iss_but_advertised"),
        pytest.param(
            {"send_iss": False, "advertise_iss": False}, None, None, True, id="no_iss_at_all"
        ),
    ],
)
async def test_rfc9207_iss(
    knobs: dict[str, Any], advertised: bool | None, iss: str | None, sdk_accepts: bool
) -> None:
    with Sandbox(servers=1, **knobs) as sb:
        server = sb.servers[0]
        assert as_metadata(server).get("authorization_response_iss_parameter_supported") is (
            advertised
        )
        login = Login()
        if sdk_accepts or not SDK_CHECKS_ISS:  # mcp 1.x checks no iss: the runner does
            await sdk_login(sb, server, login=login)
            assert login.storage.tokens is not None
        else:
            with pytest.raises(OAuthFlowError, match="iss"):
                await sdk_login(sb, server, login=login)
            assert login.storage.tokens is None
        (callback,) = login.callbacks
        assert callback["state"] == login.sent_state
        if iss is None:
            assert "iss" not in callback
        elif iss == "issuer":
            assert callback["iss"] == server.issuer
        else:
            assert callback["iss"] not in (server.issuer, "")


async def test_authorize_delay_holds_the_redirect_back() -> None:
    with Sandbox(servers=1, authorize_delay=0.3) as sb:
        started = time.monotonic()
        login = await sdk_login(sb, sb.servers[0])
        assert time.monotonic() - started >= 0.3
        assert login.storage.tokens is not None


async def test_a_hung_token_endpoint_outlasts_the_deadline_and_does_not_delay_stop() -> None:
    sb = Sandbox(servers=1, hang=True)
    with sb:
        server = sb.servers[0]
        login = Login()
        with pytest.raises(TimeoutError):
            await sdk_login(sb, server, deadline=1.5, login=login)
        # The flow got as far as the token request: consent was given, a code came back.
        (callback,) = login.callbacks
        assert "code" in callback
        assert sb.issued_tokens(server.name) == set()
        started = time.monotonic()
    stop_took = time.monotonic() - started
    # uvicorn's graceful shutdown would wait 1 s for the hung request; the sandbox releases it.
    assert stop_took < 0.9, stop_took


async def test_an_open_mcp_session_does_not_delay_stop() -> None:
    sb = Sandbox(servers=1)
    sb.start()
    try:
        server = sb.servers[0]
        login = await sdk_login(sb, server)
        assert login.storage.tokens is not None
        bearer = {"Authorization": f"Bearer {login.storage.tokens.access_token}"}
        with anyio.fail_after(FLOW_DEADLINE):
            async with (
                sdk_http.AsyncClient(headers=bearer, timeout=10.0) as http,
                streamable_http_client(server.url, http_client=http) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await session.list_tools()
                started = time.monotonic()
                await anyio.to_thread.run_sync(sb.stop)
                stop_took = time.monotonic() - started
    finally:
        sb.stop()
    # With the session's event stream still open, uvicorn alone would wait out its 1 s.
    assert stop_took < 0.9, stop_took


async def test_many_logins_at_once_each_get_their_own_token() -> None:
    with Sandbox(servers=4) as sb:
        logins = await asyncio.gather(*(sdk_login(sb, server) for server in sb.servers))
        assert sb.browser_calls == 4
        for server, login in zip(sb.servers, logins, strict=True):
            assert login.storage.tokens is not None
            token = login.storage.tokens.access_token
            assert sb.issued_tokens(server.name) == {token}
            assert await whoami_with_token(server.url, token) == server.name


def test_start_and_stop_leave_no_thread_socket_or_signal_handler_behind() -> None:
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    sigint_before = signal.getsignal(signal.SIGINT)
    with Sandbox(servers=3) as sb:
        assert len(set(threading.enumerate()) - threads_before) == 1
        assert signal.getsignal(signal.SIGINT) is sigint_before
        ports = [server.port for server in sb.servers]
        assert len(set(ports)) == 3
        for server in sb.servers:
            assert server.url == f"http://127.0.0.1:{server.port}/mcp"
            assert server.issuer == f"http://127.0.0.1:{server.port}"
        assert sb.config() == {s.name: {"url": s.url} for s in sb.servers}
    # No thread of ours is left (a thread of an earlier test may have ended meanwhile).
    assert set(threading.enumerate()) - threads_before == set()
    assert signal.getsignal(signal.SIGINT) is sigint_before
    for port in ports:
        with closing(socket.socket()) as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))
    assert open_fds() == fds_before
    with pytest.raises(SandboxError):
        sb.start()


def test_browser_names_an_unreachable_callback_and_refuses_to_leave_loopback() -> None:
    with (
        Sandbox(servers=1) as sb,
        closing(socket.socket()) as silent,  # bound, never listening: connections are refused
    ):
        silent.bind(("127.0.0.1", 0))
        redirect_uri = f"http://127.0.0.1:{silent.getsockname()[1]}/callback"
        issuer = sb.servers[0].issuer
        registered = httpx.post(
            f"{issuer}/register",
            json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
            trust_env=False,
        )
        assert registered.status_code == 201, registered.text
        query = {
            "response_type": "code",
            "client_id": registered.json()["client_id"],
            "redirect_uri": redirect_uri,
            "state": "s" * 32,
            "code_challenge": "c" * 43,
            "code_challenge_method": "S256",
        }
        with pytest.raises(CallbackUnreachable, match="not reachable"):
            sb.browser(f"{issuer}/authorize?{urlencode(query)}")
        with pytest.raises(BrowserError, match="loopback"):
            sb.browser("http://example.com/authorize")
        assert sb.browser_calls == 2


def test_overrides_are_checked() -> None:
    with pytest.raises(ValueError, match="sandbox-3"):
        Sandbox(servers=2, overrides={"sandbox-3": Behaviour()})
    with pytest.raises(ValueError, match="overrides"):
        Sandbox(servers=1, overrides={"sandbox-1": {"no_such_knob": True}})
    with pytest.raises(ValueError, match="consent"):
        Behaviour(consent="maybe")  # type: ignore[arg-type]
