"""The sandbox's authorization-server knobs, each against the default: real servers, no mocks.

Most tests speak plain HTTP to a sandbox server (the SDK's own HTTP client module: ``httpx2``
on mcp 2.x, ``httpx`` on 1.x), reading each redirect's ``Location`` instead of following it,
so no callback listener is needed; the SDK's own MCP and OAuth clients show what a real
client meets. Waits are on events or on bounded polling of an observable condition, never on
a bare sleep.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import pytest
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from runner._child._sdk import CodeResult, MemoryStorage, code_result
from runner.sandbox import Behaviour, Sandbox, SandboxServer, TokenRejected, whoami_with_token
from runner.sandbox.compat import http

pytestmark = pytest.mark.anyio

_DEADLINE = 15.0
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "sandbox-knobs-test", "version": "0"},
    },
}
_TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
_TOOLS_CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "whoami", "arguments": {}},
}
_CIMD_URL = "https://client.example/oauth/client-metadata.json"


# -- plain HTTP: metadata, registration, authorization, token requests -------------------------


@contextmanager
def plain() -> Iterator[http.Client]:
    """An HTTP client for the sandbox's plain-http loopback URLs. No TLS is ever negotiated,
    so it skips loading the CA bundle (about 30 ms per client)."""
    with http.Client(trust_env=False, timeout=5.0, follow_redirects=False, verify=False) as client:
        yield client


def as_metadata(server: SandboxServer) -> dict[str, Any]:
    with plain() as client:
        response = client.get(f"{server.issuer}/.well-known/oauth-authorization-server")
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()
    return metadata


def callback_uri(port: int = 0, host: str = "127.0.0.1") -> str:
    """A loopback callback URI; nothing listens there (redirects are read, not followed)."""
    return f"http://{host}:{port or secrets.randbelow(20000) + 40000}/callback"


@dataclass
class Client:
    """A client of one sandbox server, as the token endpoint sees it."""

    client_id: str
    secret: str | None = None
    method: str = "none"
    redirect_uri: str = field(default_factory=callback_uri)

    def authenticate(self, form: dict[str, str]) -> dict[str, str]:
        """Headers for ``form`` (which this completes) under the client's auth method."""
        form["client_id"] = self.client_id
        if self.method == "client_secret_post":
            assert self.secret is not None
            form["client_secret"] = self.secret
        if self.method == "client_secret_basic":
            basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}


def register(server: SandboxServer, method: str = "none", scope: str | None = None) -> Client:
    redirect_uri = callback_uri()
    body: dict[str, Any] = {"redirect_uris": [redirect_uri], "token_endpoint_auth_method": method}
    if scope is not None:
        body["scope"] = scope
    with plain() as client:
        response = client.post(f"{server.issuer}/register", json=body)
    assert response.status_code == 201, response.text
    info = response.json()
    return Client(info["client_id"], info.get("client_secret"), method, redirect_uri)


@dataclass
class Code:
    code: str
    verifier: str
    redirect_uri: str


def authorize_response(
    server: SandboxServer, client_id: str, redirect_uri: str, *, scope: str | None = None
) -> tuple[http.Response, str]:
    """GET ``/authorize`` (PKCE S256), redirect not followed; the response and the verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": secrets.token_urlsafe(16),
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        "resource": server.url,
    }
    if scope is not None:
        query["scope"] = scope
    with plain() as client:
        return client.get(f"{server.issuer}/authorize?{urlencode(query)}"), verifier


def authorize(
    server: SandboxServer, client_id: str, redirect_uri: str, *, scope: str | None = None
) -> Code:
    """An authorization code: consent is automatic, the redirect carries it."""
    response, verifier = authorize_response(server, client_id, redirect_uri, scope=scope)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?")
    params = dict(parse_qsl(urlsplit(location).query))
    assert "code" in params, params.get("error")
    return Code(params["code"], verifier, redirect_uri)


def token_request(server: SandboxServer, client: Client, form: dict[str, str]) -> http.Response:
    headers = client.authenticate(form)
    with plain() as http_client:
        return http_client.post(f"{server.issuer}/token", data=form, headers=headers)


def exchange(server: SandboxServer, client: Client, code: Code) -> http.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code.code,
        "code_verifier": code.verifier,
        "redirect_uri": code.redirect_uri,
        "resource": server.url,
    }
    return token_request(server, client, form)


def refresh(server: SandboxServer, client: Client, refresh_token: str) -> http.Response:
    return token_request(
        server, client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def login(
    server: SandboxServer, client: Client | None = None, *, scope: str | None = None
) -> tuple[Client, dict[str, Any]]:
    """Register (unless given a client), authorize, exchange: the client and its tokens."""
    client = client if client is not None else register(server)
    response = exchange(
        server, client, authorize(server, client.client_id, client.redirect_uri, scope=scope)
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return client, tokens


def post_mcp(
    server: SandboxServer, message: dict[str, Any], access_token: str | None = None
) -> http.Response:
    headers = dict(_MCP_HEADERS)
    if access_token is not None:
        headers["Authorization"] = f"Bearer {access_token}"
    with plain() as client:
        return client.post(server.url, json=message, headers=headers)


def challenge_params(response: http.Response) -> dict[str, str]:
    """The parameters of a ``Bearer`` challenge (values without commas, as the sandbox's)."""
    header = response.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    params = {}
    for part in rest.split(", "):
        key, _, value = part.partition("=")
        params[key] = value.strip('"')
    return params


def prm_url(server: SandboxServer) -> str:
    return f"{server.issuer}/.well-known/oauth-protected-resource/mcp"


async def poll_until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll an observable ``condition`` until it holds (bounded; fails after ``timeout``)."""
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.05)


# -- the SDK's own OAuth client, its browser reading the redirect -------------------------------


@dataclass
class SdkLogin:
    """The SDK's ``OAuthClientProvider`` whose browser reads the code off the redirect."""

    server: SandboxServer
    client_metadata_url: str | None = None
    redirect_uri: str = field(default_factory=callback_uri)
    storage: MemoryStorage = field(default_factory=lambda: MemoryStorage(None, None))
    scopes_asked: list[str | None] = field(default_factory=list)
    _pending: list[dict[str, str]] = field(default_factory=list)

    async def redirect_handler(self, url: str) -> None:
        self.scopes_asked.append(dict(parse_qsl(urlsplit(url).query)).get("scope"))
        async with http.AsyncClient(
            trust_env=False, timeout=5.0, follow_redirects=False, verify=False
        ) as c:
            response = await c.get(url)
        assert response.status_code == 302, response.text
        self._pending.append(dict(parse_qsl(urlsplit(response.headers["location"]).query)))

    async def callback_handler(self) -> CodeResult:
        params = self._pending.pop(0)
        return code_result(params["code"], params["state"], params.get("iss"))

    def provider(self) -> OAuthClientProvider:
        metadata = OAuthClientMetadata(
            redirect_uris=[AnyUrl(self.redirect_uri)],
            client_name="sandbox-knobs-test",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        return OAuthClientProvider(
            server_url=self.server.url,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self.redirect_handler,
            callback_handler=self.callback_handler,
            client_metadata_url=self.client_metadata_url,
        )


@dataclass
class Seen:
    """What an HTTP client saw: ``(method, status, WWW-Authenticate)`` of each response."""

    responses: list[tuple[str, int, str | None]] = field(default_factory=list)

    async def hook(self, response: http.Response) -> None:
        self.responses.append(
            (
                response.request.method,
                response.status_code,
                response.headers.get("www-authenticate"),
            )
        )


# -- open_initialize ----------------------------------------------------------------------------


async def list_tools_without_token(
    server: SandboxServer, seen: Seen
) -> tuple[bool, Exception | None]:
    """The SDK's MCP client with no token: whether ``initialize`` worked, and what
    ``list_tools`` (or the session's end) raised."""
    initialized = False
    try:
        async with (
            http.AsyncClient(
                trust_env=False, timeout=5.0, event_hooks={"response": [seen.hook]}
            ) as client,
            streamable_http_client(server.url, http_client=client) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            initialized = True
            await session.list_tools()
    except Exception as exc:
        return initialized, exc
    return initialized, None


async def test_open_initialize_serves_initialize_without_a_token_and_challenges_the_rest() -> None:
    with Sandbox(servers=2, overrides={"sandbox-2": {"open_initialize": True}}) as sb:
        closed, opened = sb.servers
        # The default: initialize needs a token too, and the challenge names no scope.
        refused = post_mcp(closed, _INITIALIZE)
        assert refused.status_code == 401
        assert "scope" not in challenge_params(refused)
        assert challenge_params(refused)["resource_metadata"] == prm_url(closed)

        # Plain HTTP: initialize passes, tools/list is challenged, with the scope.
        assert post_mcp(opened, _INITIALIZE).status_code == 200
        for message in (_TOOLS_LIST, [_INITIALIZE, _TOOLS_LIST]):
            challenged = post_mcp(opened, message)  # type: ignore[arg-type]
            assert challenged.status_code == 401
            assert challenge_params(challenged) == {
                "error": "invalid_token",
                "error_description": "Authentication required",
                "scope": "mcp",
                "resource_metadata": prm_url(opened),
            }
        assert post_mcp(opened, _TOOLS_LIST, "not-a-token").status_code == 401

        # The SDK's client, no token: initialize works, list_tools meets the 401.
        seen = Seen()
        with anyio.fail_after(_DEADLINE):
            initialized, failure = await list_tools_without_token(opened, seen)
        assert initialized
        assert failure is not None
        posts = [
            (status, challenge) for method, status, challenge in seen.responses if method == "POST"
        ]
        assert posts[0] == (200, None)  # initialize
        assert posts[1] == (202, None)  # notifications/initialized
        status, challenge = posts[2]  # tools/list
        assert status == 401
        assert challenge is not None
        assert 'scope="mcp"' in challenge
        assert f'resource_metadata="{prm_url(opened)}"' in challenge
        assert sb.grant_counts(opened.name)["authorize"] == 0


# -- step_up_scope (and the SDK's client through both challenges) -------------------------------


async def test_step_up_scope_is_needed_for_tools_call_only() -> None:
    with Sandbox(servers=2, overrides={"sandbox-2": {"step_up_scope": "admin"}}) as sb:
        plain_server, stepped = sb.servers
        assert as_metadata(plain_server)["scopes_supported"] == ["mcp"]
        assert as_metadata(stepped)["scopes_supported"] == ["mcp", "admin"]
        _, tokens = login(plain_server)
        assert await whoami_with_token(plain_server.url, tokens["access_token"]) == "sandbox-1"

        # A client registered with the normal scope only, given the normal scope only.
        client, tokens = login(stepped, register(stepped, scope="mcp"))
        assert tokens["scope"] == "mcp"
        access = tokens["access_token"]
        assert post_mcp(stepped, _INITIALIZE, access).status_code == 200
        assert post_mcp(stepped, _TOOLS_LIST, access).status_code != 403
        forbidden = post_mcp(stepped, _TOOLS_CALL, access)
        assert forbidden.status_code == 403
        assert forbidden.headers["www-authenticate"] == (
            f'Bearer error="insufficient_scope", scope="mcp admin", '
            f'resource_metadata="{prm_url(stepped)}"'
        )
        with pytest.raises(TokenRejected) as rejected:
            await whoami_with_token(stepped.url, access)
        assert rejected.value.status == 403

        # The same client asks for both scopes: granted; asking for nothing grants no step-up.
        _, unasked = login(stepped, client)
        assert unasked["scope"] == "mcp"
        _, both = login(stepped, client, scope="mcp admin")
        assert both["scope"] == "mcp admin"
        assert await whoami_with_token(stepped.url, both["access_token"]) == "sandbox-2"
        assert sb.authorized_client_ids(stepped.name) == [client.client_id] * 3


async def test_the_sdk_client_logs_in_after_an_open_initialize_and_steps_up() -> None:
    with Sandbox(servers=1, open_initialize=True, step_up_scope="admin") as sb:
        server = sb.servers[0]
        sdk = SdkLogin(server)
        seen = Seen()
        with anyio.fail_after(_DEADLINE):
            async with (
                http.AsyncClient(
                    auth=sdk.provider(), timeout=5.0, event_hooks={"response": [seen.hook]}
                ) as client,
                streamable_http_client(server.url, http_client=client) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()  # no token yet: served
                assert sb.grant_counts(server.name)["authorize"] == 0
                listed = await session.list_tools()  # 401: login, same session
                called = await session.call_tool("whoami", {})  # 403: step-up, same session
        assert [tool.name for tool in listed.tools] == ["whoami"]
        assert "sandbox-1" in str(called.content)
        # The first request after initialize met the 401 (the POST, or the client's GET of
        # the event stream), the tools/call the 403; the login and the step-up kept the session.
        statuses = [status for _, status, _ in seen.responses]
        assert statuses[:2] == [200, 202]
        assert 401 in statuses
        assert ("POST", 403) in [(method, status) for method, status, _ in seen.responses]
        assert sdk.scopes_asked[0] == "mcp"
        assert sdk.scopes_asked[-1] is not None
        assert set(sdk.scopes_asked[-1].split()) == {"mcp", "admin"}
        assert sdk.storage.tokens is not None
        assert set((sdk.storage.tokens.scope or "").split()) == {"mcp", "admin"}
        assert sb.grant_counts(server.name)["authorization_code"] == 2


# -- refresh faults, delay and presentations ----------------------------------------------------

_FAULTS_ROTATING_NOTHING = {
    "server_error": (500, "text/plain", None),
    "invalid_request": (400, "application/json", "invalid_request"),
    "html": (400, "text/html", None),
}


def test_refresh_faults_that_rotate_nothing() -> None:
    faults = ["none", *_FAULTS_ROTATING_NOTHING]
    overrides = {f"sandbox-{i}": {"refresh_fault": fault} for i, fault in enumerate(faults, 1)}
    with Sandbox(servers=len(faults), overrides=overrides) as sb:
        for server, fault in zip(sb.servers, faults, strict=True):
            assert server.behaviour.refresh_fault == fault
            client, tokens = login(server)
            issued = sb.issued_tokens(server.name)
            answers = [refresh(server, client, tokens["refresh_token"]) for _ in range(2)]
            if fault == "none":  # served, rotated: the second presentation is refused
                assert answers[0].status_code == 200
                assert answers[0].json()["refresh_token"] != tokens["refresh_token"]
                assert (answers[1].status_code, answers[1].json()["error"]) == (
                    400,
                    "invalid_grant",
                )
                assert sb.grant_counts(server.name)["refresh_token"] == 1
            else:
                status, content_type, error = _FAULTS_ROTATING_NOTHING[fault]
                for answer in answers:  # the same refusal twice: the token was not used up
                    assert answer.status_code == status, fault
                    assert answer.headers["content-type"].startswith(content_type), fault
                    if error is not None:
                        assert answer.json()["error"] == error
                    else:
                        with pytest.raises(json.JSONDecodeError):
                            json.loads(answer.content)
                assert sb.grant_counts(server.name)["refresh_token"] == 0
                assert sb.issued_tokens(server.name) == issued
            assert sb.refresh_presentations(server.name) == {tokens["refresh_token"]: 2}
            # Code exchanges stay normal whatever the refresh fault.
            assert sb.grant_counts(server.name)["authorization_code"] == 1


def test_rate_limited_refuses_the_first_presentation_of_each_refresh_token() -> None:
    with Sandbox(servers=1, refresh_fault="rate_limited") as sb:
        server = sb.servers[0]
        client, tokens = login(server)
        first = refresh(server, client, tokens["refresh_token"])
        assert first.status_code == 429
        assert first.headers["retry-after"] == "1"
        served = refresh(server, client, tokens["refresh_token"])  # no need to wait: served
        assert served.status_code == 200, served.text
        rotated = served.json()["refresh_token"]
        assert refresh(server, client, rotated).status_code == 429
        assert refresh(server, client, rotated).status_code == 200
        assert sb.refresh_presentations(server.name) == {tokens["refresh_token"]: 2, rotated: 2}
        assert sb.grant_counts(server.name)["refresh_token"] == 2


def test_garbled_after_rotation_serves_the_refresh_and_spoils_the_answer() -> None:
    with Sandbox(servers=1, refresh_fault="garbled_after_rotation") as sb:
        server = sb.servers[0]
        client, tokens = login(server)
        garbled = refresh(server, client, tokens["refresh_token"])
        assert garbled.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(garbled.content)
        assert sb.grant_counts(server.name)["refresh_token"] == 1
        assert len(sb.issued_tokens(server.name)) == 2  # new tokens exist; the client lost them
        again = refresh(server, client, tokens["refresh_token"])
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
        # A refused grant is answered as the SDK answers it, not garbled.
        unknown = refresh(server, client, "not-a-refresh-token")
        assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_grant")


async def test_early_refusal_until_the_access_token_has_expired() -> None:
    with Sandbox(servers=1, refresh_fault="early_refusal", access_token_ttl=1) as sb:
        server = sb.servers[0]
        client, tokens = login(server)
        early = refresh(server, client, tokens["refresh_token"])
        assert (early.status_code, early.json()["error"]) == (400, "invalid_grant")
        assert sb.grant_counts(server.name)["refresh_token"] == 0

        async def expired() -> bool:
            return post_mcp(server, _INITIALIZE, tokens["access_token"]).status_code == 401

        await poll_until(expired, timeout=5.0)
        served = refresh(server, client, tokens["refresh_token"])
        assert served.status_code == 200, served.text
        assert served.json()["refresh_token"] != tokens["refresh_token"]
        assert sb.refresh_presentations(server.name) == {tokens["refresh_token"]: 2}


async def test_refresh_delay_holds_the_answer_back_and_does_not_delay_stop() -> None:
    with Sandbox(servers=1, refresh_delay=0.3) as sb:
        server = sb.servers[0]
        client, tokens = login(server)  # code exchanges are not delayed
        started = time.monotonic()
        assert refresh(server, client, tokens["refresh_token"]).status_code == 200
        assert time.monotonic() - started >= 0.3

    sb = Sandbox(servers=1, refresh_delay=60.0)
    with sb:
        server = sb.servers[0]
        client, tokens = login(server)
        answers: list[int] = []

        async def refresh_in_flight() -> None:
            answer = await anyio.to_thread.run_sync(
                refresh, server, client, tokens["refresh_token"]
            )
            answers.append(answer.status_code)

        async def arrived() -> bool:
            return tokens["refresh_token"] in sb.refresh_presentations(server.name)

        with anyio.fail_after(_DEADLINE):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(refresh_in_flight)
                await poll_until(arrived, timeout=5.0)
                started = time.monotonic()
                await anyio.to_thread.run_sync(sb.stop)
                stop_took = time.monotonic() - started
    assert stop_took < 0.9, stop_took
    assert answers == [503]


def test_refresh_presentations_count_every_presentation_as_a_copy() -> None:
    with Sandbox(servers=2) as sb:
        server, other = sb.servers
        assert sb.refresh_presentations(server.name) == {}
        client, tokens = login(server)
        assert refresh(server, client, tokens["refresh_token"]).status_code == 200
        before = sb.refresh_presentations(server.name)
        assert refresh(server, client, tokens["refresh_token"]).status_code == 400  # rotated
        assert refresh(server, client, "not-a-refresh-token").status_code == 400
        # Refused before the grant is looked at (unknown client): presented all the same.
        stranger = Client("no-such-client")
        assert refresh(server, stranger, "another-unknown-token").status_code == 401
        assert before == {tokens["refresh_token"]: 1}
        assert sb.refresh_presentations(server.name) == {
            tokens["refresh_token"]: 2,
            "not-a-refresh-token": 1,
            "another-unknown-token": 1,
        }
        assert sb.refresh_presentations(other.name) == {}
        with pytest.raises(KeyError):
            sb.refresh_presentations("sandbox-3")


# -- client identification ----------------------------------------------------------------------


def test_auth_methods_are_advertised_and_enforced() -> None:
    basic_only = {"auth_methods": ("client_secret_basic",)}
    with Sandbox(servers=2, overrides={"sandbox-2": basic_only}) as sb:
        default, strict = sb.servers
        assert as_metadata(default)["token_endpoint_auth_methods_supported"] == [
            "none",
            "client_secret_post",
            "client_secret_basic",
        ]
        assert as_metadata(strict)["token_endpoint_auth_methods_supported"] == [
            "client_secret_basic"
        ]
        for method in ("none", "client_secret_post", "client_secret_basic"):
            login(default, register(default, method))
        for method in ("none", "client_secret_post"):
            client = register(strict, method)  # registration itself is not refused
            code = authorize(strict, client.client_id, client.redirect_uri)
            refused = exchange(strict, client, code)
            assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
        client, tokens = login(strict, register(strict, "client_secret_basic"))
        assert refresh(strict, client, tokens["refresh_token"]).status_code == 200
        assert sb.grant_counts(strict.name)["authorization_code"] == 1


def test_registration_off_removes_the_endpoint() -> None:
    with Sandbox(servers=2, overrides={"sandbox-2": {"registration": False}}) as sb:
        default, closed = sb.servers
        assert as_metadata(default)["registration_endpoint"] == f"{default.issuer}/register"
        assert "registration_endpoint" not in as_metadata(closed)
        with plain() as client:
            refused = client.post(
                f"{closed.issuer}/register",
                json={"redirect_uris": [callback_uri()], "token_endpoint_auth_method": "none"},
            )
        assert refused.status_code in (404, 405)


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic", "none"])
def test_a_preregistered_client_uses_any_loopback_callback_port(method: str) -> None:
    secret = "" if method == "none" else "sandbox-secret"
    known = ("sandbox-client", secret, method)
    with Sandbox(
        servers=2, registration=False, overrides={"sandbox-2": {"preregistered": known}}
    ) as sb:
        unknown, server = sb.servers
        response, _ = authorize_response(unknown, "sandbox-client", callback_uri())
        assert response.status_code == 400  # not redirected: the client is unknown there
        client = Client("sandbox-client", secret or None, method)
        for port in (40001, 51234):
            client.redirect_uri = callback_uri(port)
            _, tokens = login(server, client)
            assert refresh(server, client, tokens["refresh_token"]).status_code == 200
        for redirect_uri in (
            "http://127.0.0.1:40001/elsewhere",
            "http://localhost:40001/callback",
            "http://127.0.0.1/callback",
            "https://127.0.0.1:40001/callback",
        ):
            refused, _ = authorize_response(server, "sandbox-client", redirect_uri)
            assert refused.status_code == 400, redirect_uri
            assert "location" not in refused.headers
        if method != "none":
            wrong = Client("sandbox-client", "wrong-secret", method, callback_uri(40002))
            code = authorize(server, wrong.client_id, wrong.redirect_uri)
            assert exchange(server, wrong, code).status_code == 401
        assert sb.authorized_client_ids(server.name)[:2] == ["sandbox-client"] * 2
        assert sb.authorized_client_ids(unknown.name) == []


def test_cimd_accept_and_refuse() -> None:
    overrides = {"sandbox-2": {"cimd": "accept"}, "sandbox-3": {"cimd": "refuse"}}
    with Sandbox(servers=3, overrides=overrides) as sb:
        off, accepting, refusing = sb.servers
        assert "client_id_metadata_document_supported" not in as_metadata(off)
        response, _ = authorize_response(off, _CIMD_URL, callback_uri(27890))
        assert response.status_code == 400
        for server in (accepting, refusing):
            assert as_metadata(server)["client_id_metadata_document_supported"] is True

        client = Client(_CIMD_URL, redirect_uri=callback_uri(27890))
        _, tokens = login(accepting, client)
        assert refresh(accepting, client, tokens["refresh_token"]).status_code == 200
        client.redirect_uri = callback_uri(27894, "localhost")
        login(accepting, client)
        for client_id, redirect_uri in (
            (_CIMD_URL, callback_uri(27895)),  # not one of cimd_ports
            ("https://client.example/", callback_uri(27890)),  # a root path: not a document
            ("http://client.example/metadata.json", callback_uri(27890)),  # not https
        ):
            refused, _ = authorize_response(accepting, client_id, redirect_uri)
            assert refused.status_code == 400, (client_id, redirect_uri)
        registered, _ = login(accepting)  # registration still works alongside
        assert sb.authorized_client_ids(accepting.name) == [
            _CIMD_URL,
            _CIMD_URL,
            registered.client_id,
        ]

        # The person consents, then the token endpoint refuses the document.
        client = Client(_CIMD_URL, redirect_uri=callback_uri(27891))
        code = authorize(refusing, client.client_id, client.redirect_uri)
        refused = exchange(refusing, client, code)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
        assert sb.authorized_client_ids(refusing.name) == [_CIMD_URL]
        assert sb.grant_counts(refusing.name)["authorization_code"] == 0
        registered, _ = login(refusing)  # a registered client is not refused
        assert sb.authorized_client_ids(refusing.name) == [_CIMD_URL, registered.client_id]


async def test_the_sdk_client_uses_a_client_id_metadata_document_when_advertised() -> None:
    with Sandbox(servers=2, cimd="accept", overrides={"sandbox-2": {"cimd": "off"}}) as sb:
        for server, expected in zip(sb.servers, (True, False), strict=True):
            sdk = SdkLogin(server, client_metadata_url=_CIMD_URL, redirect_uri=callback_uri(27892))
            with anyio.fail_after(_DEADLINE):
                async with http.AsyncClient(auth=sdk.provider(), timeout=5.0) as client:
                    response = await client.post(server.url, json=_INITIALIZE, headers=_MCP_HEADERS)
            assert response.status_code == 200, response.text
            (client_id,) = sb.authorized_client_ids(server.name)
            assert (client_id == _CIMD_URL) is expected


# -- the knobs themselves -----------------------------------------------------------------------


def test_new_knobs_are_checked_and_settable_per_server() -> None:
    for bad in (
        {"step_up_scope": "mcp"},
        {"step_up_scope": ""},
        {"step_up_scope": "two scopes"},
        {"refresh_fault": "sometimes"},
        {"refresh_delay": -1.0},
        {"auth_methods": ()},
        {"auth_methods": ("private_key_jwt",)},
        {"auth_methods": ("none", "none")},
        {"preregistered": ("", "secret", "client_secret_post")},
        {"preregistered": ("id", "", "client_secret_basic")},
        {"preregistered": ("id", "secret", "tls_client_auth")},
        {"cimd": "maybe"},
        {"cimd_ports": ()},
        {"cimd_ports": (0,)},
        {"cimd_ports": (27890, 27890)},
        {"cimd_ports": (True,)},
    ):
        (knob,) = bad
        with pytest.raises(ValueError, match=knob):
            Behaviour(**bad)
        with pytest.raises(ValueError, match=knob):
            Sandbox(servers=1, overrides={"sandbox-1": bad})
    # Sequences become tuples: a behaviour stays hashable.
    behaviour = Behaviour(auth_methods=["none"], cimd_ports=[1234])  # type: ignore[arg-type]
    assert behaviour.auth_methods == ("none",)
    assert behaviour.cimd_ports == (1234,)
    assert hash(behaviour) == hash(Behaviour(auth_methods=("none",), cimd_ports=(1234,)))
    overrides = {"sandbox-2": {"refresh_delay": 1.5, "cimd": "accept"}}
    with Sandbox(servers=2, refresh_fault="html", overrides=overrides) as sb:
        assert [server.behaviour for server in sb.servers] == [
            Behaviour(refresh_fault="html"),
            Behaviour(refresh_fault="html", refresh_delay=1.5, cimd="accept"),
        ]
    assert Behaviour() == Behaviour(
        open_initialize=False,
        step_up_scope=None,
        refresh_fault="none",
        refresh_delay=0.0,
        auth_methods=("none", "client_secret_post", "client_secret_basic"),
        registration=True,
        preregistered=None,
        cimd="off",
        cimd_ports=(27890, 27891, 27892, 27893, 27894),
    )
