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
- the SDK's two majors differ in three ways (measured on mcp 1.26.0, 2.0.0 with httpx2
  2.7.0, and 2.3.0), handled in ``runner._io._http`` (the HTTP client and what
  ``callback_handler`` returns) and here: 2.x checks a callback's RFC 9207 ``iss`` itself;
  1.x knows nothing of ``iss``: its ``OAuthMetadata`` drops
  ``authorization_response_iss_parameter_supported`` and appends ``/`` to a path-less
  issuer, so on 1.x the listener checks an ``iss`` that comes but cannot require one, and
  cannot check it at all for a path-less issuer (``issuer_expectation``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.exceptions import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl, ValidationError

from runner._core._challenge import Challenge, parse_challenge
from runner._core._identity import auth_method
from runner._core._messages import StartLogin
from runner._core._stored import StoredLogin
from runner._io._http import (
    MCP_HEADERS,
    MCP_INITIALIZE,
    MCP_V2,
    SDK_CHECKS_ISS,
    CodeResult,
    code_result,
    http,
    http_client_module,
    tls_context,
)
from runner.errors import (
    ClientMetadataRefused,
    FlowCrashed,
    FlowError,
    FlowTimeout,
    OAuthProtocolError,
    ServerUnreachable,
)

__all__ = [
    "MCP_V2",
    "SDK_CHECKS_ISS",
    "CodeResult",
    "LoginProvider",
    "MemoryStorage",
    "OAuthClientProvider",
    "build_provider",
    "code_result",
    "drive_login",
    "error_from_sdk",
    "http",
    "http_client_module",
    "issuer_expectation",
    "probe",
    "snapshot",
    "tls_context",
]


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


class LoginProvider(OAuthClientProvider):
    """The SDK's provider for one login in a child, with the runner's decisions at two of
    its hooks (present in every supported major):

    - the token exchange of a pre-registered client whose method was not configured uses
      the method ``runner._core._identity.auth_method`` chooses from the server's metadata, which
      only discovery (inside the SDK's flow) brings;
    - a token endpoint that answers ``invalid_client`` to the Client ID Metadata Document
      this login presented raises ``ClientMetadataRefused``, so that the parent marks the
      server and registers dynamically next time (hermes-agent's ``.cimd-off``).
    """

    def __init__(self, *args: Any, choose_auth_method: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._choose_auth_method = choose_auth_method

    async def _exchange_token_authorization_code(self, *args: Any, **kwargs: Any) -> Any:
        client = self.context.client_info
        metadata = self.context.oauth_metadata
        if self._choose_auth_method and client is not None:
            supported = metadata.token_endpoint_auth_methods_supported if metadata else None
            method = auth_method(None, has_secret=bool(client.client_secret), supported=supported)
            self.context.client_info = client.model_copy(
                update={"token_endpoint_auth_method": method}
            )
        return await super()._exchange_token_authorization_code(*args, **kwargs)

    async def _handle_token_response(self, response: Any) -> None:
        document = self.context.client_metadata_url
        client = self.context.client_info
        presented = document is not None and client is not None and client.client_id == document
        if presented and response.status_code in (400, 401):
            body = await response.aread()
            if b"invalid_client" in body[:4096]:
                raise ClientMetadataRefused(
                    f"{self.context.server_url}: the authorization server refused the client "
                    f"metadata document {document} (invalid_client)"
                )
        await super()._handle_token_response(response)


def build_provider(
    start: StartLogin,
    redirect_handler: Callable[[str], Awaitable[None]],
    callback_handler: Callable[[], Awaitable[CodeResult]],
) -> OAuthClientProvider:
    """A provider for one login: a fresh one (no tokens: the parent refreshes, a child only
    logs in), with the registration it may reuse or the configured client put back."""
    client: OAuthClientInformationFull | None = None
    if start.client_info is not None:
        client = OAuthClientInformationFull.model_validate(start.client_info)
    if start.client_id is not None:
        client = OAuthClientInformationFull(
            client_id=start.client_id,
            client_secret=start.client_secret,
            redirect_uris=[AnyUrl(start.redirect_uri)],
            token_endpoint_auth_method=start.token_endpoint_auth_method,
        )
    elif client is not None and not _registration_fits(client, start.redirect_uri):
        client = None  # registered for another port: register again (defect 10)
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(start.redirect_uri)],
        client_name=start.client_name,
        scope=start.scope,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        # RFC 8252 §8.4: a loopback client is a public client, unless a method is configured
        # (a server that wants a confidential registration, such as Figma's).
        token_endpoint_auth_method=start.token_endpoint_auth_method or "none",  # type: ignore[arg-type]
    )
    document = start.client_metadata_url if client is None else None
    return LoginProvider(
        server_url=start.server_url,
        client_metadata=metadata,
        storage=MemoryStorage(None, client),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        client_metadata_url=document,
        choose_auth_method=start.client_id is not None and start.token_endpoint_auth_method is None,
    )


def issuer_expectation(provider: OAuthClientProvider) -> tuple[str | None, bool]:
    """The issuer a callback's ``iss`` must equal, and whether ``iss`` is required."""
    metadata = provider.context.oauth_metadata
    if metadata is None:
        return None, False
    issuer = str(metadata.issuer)
    if MCP_V2:
        return issuer, bool(metadata.authorization_response_iss_parameter_supported)
    # mcp 1.x's OAuthMetadata has no such field, so iss can be checked but not required; and
    # it appends "/" to a path-less issuer (measured: "http://127.0.0.1:P" -> ".../"), so for
    # one of those the issuer's true spelling is lost and an exact check could refuse a
    # correct iss: the listener does not check it then (1.x itself never does).
    if urlsplit(issuer).path == "/":
        return None, False
    return issuer, False


class _Replay(http.AsyncBaseTransport):
    """A transport that answers the login's first request to the MCP server with the
    challenge the login started from, and sends everything else on.

    The SDK's flow starts only from a response that asks for a login; the challenge the
    host got on any request (or the child's own probe) is handed to it this way, with the
    scope the parent decided on, instead of asking the server again with an ``initialize``
    that it may let through."""

    def __init__(self, inner: Any, url: str, header: str) -> None:
        self._inner = inner
        self._url = url
        self._header = header
        self._replayed = False

    async def handle_async_request(self, request: Any) -> Any:
        if not self._replayed and request.method == "POST" and str(request.url) == self._url:
            self._replayed = True
            return http.Response(401, headers={"WWW-Authenticate": self._header}, request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def probe(
    server_url: str, timeout: float, *, tls: ssl.SSLContext | None = None
) -> Challenge | int:
    """Send the MCP server an ``initialize`` without a token: its challenge, or the status
    it answered with when it asked for nothing."""
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    async with (
        http.AsyncClient(timeout=timeout, follow_redirects=False, verify=verify) as client,
        client.stream(
            "POST", server_url, json=dict(MCP_INITIALIZE), headers=dict(MCP_HEADERS)
        ) as response,
    ):
        challenge = parse_challenge(response.status_code, response.headers.get("www-authenticate"))
        return challenge if challenge is not None else int(response.status_code)


async def drive_login(
    provider: OAuthClientProvider,
    server_url: str,
    timeout: float,
    challenge: Challenge,
    *,
    scope: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Log in through ``provider``, starting from ``challenge`` (asking for ``scope`` when
    given, instead of the challenge's): the SDK discovers, registers, authorizes and
    exchanges the code, then sends its ``initialize`` with the new token.
    ``tls``: a context from ``tls_context()`` built beforehand (None builds one now).

    Raises ``OAuthProtocolError`` when the server refuses the new token (a 401, or a 403
    that is not ``insufficient_scope``).
    """
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    transport = _Replay(
        http.AsyncHTTPTransport(verify=verify), server_url, challenge.header(scope=scope)
    )
    async with (
        http.AsyncClient(
            auth=provider, transport=transport, timeout=timeout, follow_redirects=False
        ) as client,
        client.stream(
            "POST", server_url, json=dict(MCP_INITIALIZE), headers=dict(MCP_HEADERS)
        ) as response,
    ):
        status = response.status_code
        again = parse_challenge(status, response.headers.get("www-authenticate"))
    if provider.context.current_tokens is None:
        raise OAuthProtocolError(f"{server_url}: the login ended without tokens (HTTP {status})")
    # A 403 insufficient_scope is no refusal of the token: it is good, and the host asks for
    # more scopes when a request needs them (its step-up); a 401 or another 403 refuses it.
    if status == 401 or (status == 403 and (again is None or not again.step_up)):
        raise OAuthProtocolError(f"{server_url} refused the new token (HTTP {status})")


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


def _request_url(exc: BaseException) -> str | None:
    """The URL of the request an HTTP client's error is about, without its query (it may
    carry a code or a state), if the error knows it."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when it is unset
        return None
    return str(url.copy_with(query=None, fragment=None))


def error_from_sdk(exc: BaseException, server_url: str) -> FlowError:
    """Map what the SDK or the HTTP client raised to a ``runner.errors`` class."""
    if isinstance(exc, FlowError):
        return exc
    if isinstance(exc, OAuthFlowError | OAuthTokenError | OAuthRegistrationError):
        return OAuthProtocolError(f"{server_url}: {exc}")
    if isinstance(exc, http.ConnectError):
        # Before any answer: no protocol went wrong, the server is not there (yet).
        return ServerUnreachable(
            f"{server_url}: could not connect to {_request_url(exc) or server_url} "
            f"({exc or type(exc).__name__})"
        )
    if isinstance(exc, http.TimeoutException):
        return FlowTimeout(f"{server_url}: the server did not answer in time ({exc!r})")
    if isinstance(exc, http.HTTPError):
        return OAuthProtocolError(f"{server_url}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ValidationError):
        return OAuthProtocolError(f"{server_url}: malformed response: {exc.errors()[0]['msg']}")
    return FlowCrashed(f"{server_url}: unexpected {type(exc).__name__}: {exc}")
