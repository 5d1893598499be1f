"""The MCP SDK's own OAuth client, driven to the end of a login against a sandbox server:
``OAuthClientProvider`` (discovery, registration, PKCE, token exchange) with
``Sandbox.browser`` as its browser and a small callback listener that runs on a port-0
socket of its own, in the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from runner._child._sdk import CodeResult, MemoryStorage, code_result
from runner._child._sdk import (
    http as sdk_http,  # the SDK's own HTTP client: httpx2 on 2.x, httpx on 1.x
)
from runner.sandbox import Sandbox, SandboxServer

#: The request that meets the server's first 401.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "sandbox-test", "version": "0"},
    },
}
#: What one login may take, at most (see :func:`sdk_login`).
FLOW_DEADLINE = 20.0


# -- a callback listener: the client side of the redirect ----------------------------------------


class CallbackListener:
    """Serves ``GET /callback`` on a port-0 socket; records each callback's query."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/callback"
        self.received: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            parts = urlsplit(target)
            if method == "GET" and parts.path == "/callback":
                self.received.put_nowait(dict(parse_qsl(parts.query)))
                status, body = "200 OK", b"done"
            else:
                status, body = "404 Not Found", b"no"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


@asynccontextmanager
async def callback_listener() -> AsyncIterator[CallbackListener]:
    listener = CallbackListener()
    server = await asyncio.start_server(listener._handle, sock=listener.sock)
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


# -- the SDK's client, driven to the end of a login ----------------------------------------------


class CallbackError(Exception):
    """The callback carried ``error=``; the test's callback handler refuses it."""

    def __init__(self, params: dict[str, str]) -> None:
        super().__init__(params.get("error"))
        self.params = params


@dataclass
class Login:
    """One login's observations."""

    storage: MemoryStorage = field(default_factory=lambda: MemoryStorage(None, None))
    authorization_urls: list[str] = field(default_factory=list)
    callbacks: list[dict[str, str]] = field(default_factory=list)
    browser_statuses: list[int] = field(default_factory=list)

    @property
    def sent_state(self) -> str:
        return dict(parse_qsl(urlsplit(self.authorization_urls[-1]).query))["state"]


def sdk_provider(
    sb: Sandbox, server: SandboxServer, listener: CallbackListener, login: Login
) -> OAuthClientProvider:
    async def redirect_handler(url: str) -> None:
        login.authorization_urls.append(url)
        status = await anyio.to_thread.run_sync(sb.browser, url, None)
        login.browser_statuses.append(status)

    async def callback_handler() -> CodeResult:
        params = await listener.received.get()
        login.callbacks.append(params)
        if "error" in params:
            raise CallbackError(params)
        return code_result(params["code"], params["state"], params.get("iss"))

    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(listener.url)],
        client_name="sandbox-test",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(
        server_url=server.url,
        client_metadata=metadata,
        storage=login.storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


async def sdk_login(
    sb: Sandbox,
    server: SandboxServer,
    *,
    deadline: float = FLOW_DEADLINE,
    login: Login | None = None,
) -> Login:
    """Run one login with the SDK's client: an MCP initialize that meets a 401.

    ``deadline`` bounds the whole login. It has to: the requests the SDK's auth flow makes
    (discovery, registration, token) carry no timeout, whatever the client's timeout is.
    """
    login = login if login is not None else Login()
    async with callback_listener() as listener:
        provider = sdk_provider(sb, server, listener, login)
        with anyio.fail_after(deadline):
            async with sdk_http.AsyncClient(auth=provider, timeout=10.0) as http:
                response = await http.post(
                    server.url,
                    json=INITIALIZE,
                    headers={"Accept": "application/json, text/event-stream"},
                )
                assert response.status_code == 200, response.text
    return login


def as_metadata(server: SandboxServer) -> dict[str, Any]:
    # As JSON: mcp 1.x's OAuthMetadata drops the RFC 9207 field.
    response = httpx.get(f"{server.issuer}/.well-known/oauth-authorization-server", trust_env=False)
    response.raise_for_status()
    metadata: dict[str, Any] = response.json()
    return metadata
