"""The conformance suite's client on the bare MCP SDK, in one process: the baseline.

``python scripts/conformance/bare_client.py <server url>``: what a host gets from the SDK
alone (mcp 2.x, ``httpx2``), with the same configuration as ``host_client.py``: the
SDK's ``OAuthClientProvider`` with its tokens in memory, the pre-registered client of
``auth/pre-registration`` (``client_secret_basic``, as that scenario's server wants), a
Client ID Metadata Document only for ``auth/basic-cimd``, and a headless "browser" that
reads the code from the authorization server's redirect instead of serving a callback.
Then ``initialize``, ``tools/list`` and a ``tools/call``. Exit 0 when every step worked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

CIMD_URL = "https://conformance-test.local/client-metadata.json"
REDIRECT_URI = "http://127.0.0.1:3000/callback"  # never served: the code is read from Location
TIMEOUT = 60.0

log = logging.getLogger("bare_client")


class MemoryStorage:
    """The SDK's ``TokenStorage``, in memory."""

    def __init__(self, client_info: OAuthClientInformationFull | None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HeadlessBrowser:
    """The redirect and callback handlers: GET the authorization URL, read the redirect."""

    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None

    async def redirect(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10.0) as client:
            answer = await client.get(url)
        location = answer.headers.get("location")
        if answer.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(f"the authorization endpoint answered {answer.status_code}")
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError("no code in the authorization response")
        self.result = AuthorizationCodeResult(
            code=query["code"][0],
            state=query.get("state", [None])[0],
            iss=query.get("iss", [None])[0],
        )

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("a callback before the redirect")
        result, self.result = self.result, None
        return result


def provider_for(url: str, scenario: str, context: dict[str, Any]) -> OAuthClientProvider:
    client = None
    if context.get("client_id"):
        secret = context.get("client_secret")
        client = OAuthClientInformationFull(
            client_id=context["client_id"],
            client_secret=secret,
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )
    browser = HeadlessBrowser()
    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="bare-sdk-conformance-client",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=MemoryStorage(client),
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
        client_metadata_url=CIMD_URL if scenario == "auth/basic-cimd" else None,
    )


async def run(url: str, scenario: str, context: dict[str, Any]) -> None:
    auth = provider_for(url, scenario, context)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=TIMEOUT, trust_env=False) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        if tools:
            await session.call_tool(tools[0].name, {})


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    try:
        anyio.run(run, sys.argv[-1], scenario, context)
    except Exception as exc:
        log.error("%s: %s: %s", scenario, type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
