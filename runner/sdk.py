"""Everything this project knows about the MCP SDK's OAuth client, in one place.

The rest of ``runner`` speaks in plain values (``StartLogin``, ``StoredLogin`` dicts,
``runner.errors``); this adapter turns them into an ``OAuthClientProvider`` and back.
Measured SDK behaviour it relies on (mcp 2.3; docs/architecture.md, "What the MCP SDK does
and does not do"):

- the SDK makes ``state`` and PKCE itself and shows the state only inside the URL it
  hands to ``redirect_handler``; the caller parses it there;
- it has no flow timeout, and the discovery, registration and token requests it makes
  carry no timeout even when the client has one (measured with a hung token endpoint):
  only the caller's deadline (``anyio.fail_after`` in the child) bounds them;
- a new provider over stored, expired tokens does a full browser login instead of a
  refresh unless the expiry and server metadata are put back (``restore``);
- a stored registration pins its redirect URI; one that does not name this login's
  redirect URI is dropped so that the flow registers again;
- in mcp 2.x the client is ``httpx2`` and ``callback_handler`` returns
  ``AuthorizationCodeResult``; mcp 1.x (``httpx``, a ``(code, state)`` tuple) would be
  handled here and nowhere else.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.exceptions import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl, ValidationError

from runner.errors import FlowCrashed, FlowError, FlowTimeout, OAuthProtocolError
from runner.messages import StartLogin
from runner.stored import StoredLogin

__all__ = [
    "MemoryStorage",
    "build_provider",
    "code_result",
    "drive_login",
    "error_from_sdk",
    "http_client_module",
    "issuer_expectation",
    "snapshot",
]

# The request that starts a login: an MCP initialize, as a real client's first request.
_INITIALIZE: Final = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "mcp-oauth-flows", "version": "0.1"},
    },
}


def http_client_module() -> types.ModuleType:
    """The HTTP client module the installed SDK is built on (``httpx2`` on mcp 2.x; mcp
    1.x uses ``httpx``): the one place that says which, for requests the runner makes
    itself (``runner.refresh``)."""
    return httpx2


class MemoryStorage:
    """The SDK's ``TokenStorage``, in memory: the parent persists, never the child."""

    def __init__(
        self, tokens: OAuthToken | None, client_info: OAuthClientInformationFull | None
    ) -> None:
        self.tokens = tokens
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def _registration_fits(client: OAuthClientInformationFull, redirect_uri: str) -> bool:
    return client.redirect_uris is not None and redirect_uri in {
        str(uri) for uri in client.redirect_uris
    }


def build_provider(
    start: StartLogin,
    redirect_handler: Callable[[str], Awaitable[None]],
    callback_handler: Callable[[], Awaitable[AuthorizationCodeResult]],
) -> OAuthClientProvider:
    """A provider for one login, with what the store held for it put back."""
    stored = StoredLogin.from_dict(start.stored) if start.stored is not None else None
    client = stored.client_info if stored is not None else None
    if start.client_id is not None:
        client = OAuthClientInformationFull(
            client_id=start.client_id,
            client_secret=start.client_secret,
            redirect_uris=[AnyUrl(start.redirect_uri)],
            token_endpoint_auth_method="client_secret_post" if start.client_secret else "none",
        )
    elif client is not None and not _registration_fits(client, start.redirect_uri):
        client = None  # registered for another port: register again (defect 10)
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(start.redirect_uri)],
        client_name=start.client_name,
        scope=start.scope,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        # RFC 8252 §8.4: a loopback client is a public client.
        token_endpoint_auth_method="client_secret_post" if start.client_secret else "none",
    )
    tokens = stored.tokens if stored is not None and client is not None else None
    provider = OAuthClientProvider(
        server_url=start.server_url,
        client_metadata=metadata,
        storage=MemoryStorage(tokens, client),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    if stored is not None and tokens is not None:
        # Without these a new provider over expired tokens starts a browser login
        # instead of refreshing (upstream issue #3250).
        provider.context.token_expiry_time = stored.expires_at
        provider.context.oauth_metadata = stored.oauth_metadata
    return provider


def issuer_expectation(provider: OAuthClientProvider) -> tuple[str | None, bool]:
    """The issuer a callback's ``iss`` must equal, and whether ``iss`` is required."""
    metadata = provider.context.oauth_metadata
    if metadata is None:
        return None, False
    return str(metadata.issuer), bool(metadata.authorization_response_iss_parameter_supported)


def code_result(code: str, state: str, iss: str | None) -> AuthorizationCodeResult:
    """What this SDK's ``callback_handler`` returns."""
    return AuthorizationCodeResult(code=code, state=state, iss=iss)


async def drive_login(provider: OAuthClientProvider, server_url: str, timeout: float) -> None:
    """Send the MCP server a first request through ``provider``, which logs in as needed.

    Raises ``OAuthProtocolError`` when the server still refuses after the login.
    """
    async with (
        httpx2.AsyncClient(auth=provider, timeout=timeout, follow_redirects=False) as client,
        client.stream(
            "POST",
            server_url,
            json=_INITIALIZE,
            headers={"Accept": "application/json, text/event-stream"},
        ) as response,
    ):
        status = response.status_code
    if status in (401, 403):
        raise OAuthProtocolError(f"{server_url} refused the new token (HTTP {status})")
    if provider.context.current_tokens is None:
        raise OAuthProtocolError(f"{server_url} did not ask for OAuth (HTTP {status})")


def snapshot(provider: OAuthClientProvider, server_url: str) -> dict[str, Any]:
    """The login as the token store keeps it."""
    context = provider.context
    if context.current_tokens is None:
        raise OAuthProtocolError("the login ended without tokens")
    return StoredLogin(
        server_url=server_url,
        tokens=context.current_tokens,
        expires_at=context.token_expiry_time,
        client_info=context.client_info,
        oauth_metadata=context.oauth_metadata,
    ).to_dict()


def error_from_sdk(exc: BaseException, server_url: str) -> FlowError:
    """Map what the SDK or the HTTP client raised to a ``runner.errors`` class."""
    if isinstance(exc, FlowError):
        return exc
    if isinstance(exc, OAuthFlowError | OAuthTokenError | OAuthRegistrationError):
        return OAuthProtocolError(f"{server_url}: {exc}")
    if isinstance(exc, httpx2.TimeoutException):
        return FlowTimeout(f"{server_url}: the server did not answer in time ({exc!r})")
    if isinstance(exc, httpx2.HTTPError):
        return OAuthProtocolError(f"{server_url}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ValidationError):
        return OAuthProtocolError(f"{server_url}: malformed response: {exc.errors()[0]['msg']}")
    return FlowCrashed(f"{server_url}: unexpected {type(exc).__name__}: {exc}")
