"""Using a stored login without a person: is it still valid, and refreshing it in the parent.

The fast path of ``authorize_many`` (``runner.supervisor``) asks ``login_status`` what a
stored login is good for; a refreshable one is refreshed here, in the parent, with no port,
no child and no browser. The refresh request is the one the SDK's ``OAuthClientProvider``
builds (``_refresh_token`` and ``OAuthContext.prepare_token_auth`` in mcp 2.x), so an
authorization server sees the same grant whoever sends it.

Pure (no I/O, no clock: ``now`` is passed in): ``login_status``, ``refresh_request``,
``refreshed_login``. I/O: ``refresh_login`` (one POST).

Invariants:

- ``refreshed_login`` raises only ``RefreshRefused`` (HTTP 400 or 401: a new login is
  needed) or ``OAuthProtocolError`` (anything else that is not a valid token response),
  whatever the status and body (property-tested, ``tests/unit/test_refresh.py``); the
  record it returns encodes and decodes (``StoredLogin.from_dict(r.to_dict())``);
- a refresh response without a refresh token keeps the old one, and one without a scope
  keeps the old scope (RFC 6749 §6; the SDK does the same); the client registration and
  the server metadata are kept as they were;
- ``refresh_login`` is bounded by its ``timeout`` as a whole (connect, send, read), reads
  at most ``MAX_TOKEN_RESPONSE_BYTES``, never follows a redirect, ignores proxy and
  certificate settings from the environment (``trust_env=False``), and raises only
  ``RefreshRefused``, ``OAuthProtocolError`` or ``FlowTimeout`` (and cancellation);
- no message and no ``repr`` shows a token, a client secret or the server's answer
  (``RefreshRequest`` hides its form and headers).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
import re
import ssl
import time
import types
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

import anyio
from mcp.shared.auth import OAuthToken
from mcp.shared.auth_utils import resource_url_from_server_url

from runner import sdk
from runner.errors import FlowTimeout, OAuthProtocolError, RefreshRefused
from runner.offloop import in_daemon_thread
from runner.stored import InvalidLoginRecord, StoredLogin

__all__ = [
    "DEFAULT_MARGIN",
    "MAX_TOKEN_RESPONSE_BYTES",
    "LoginStatus",
    "RefreshRequest",
    "SharedTlsContext",
    "login_status",
    "refresh_login",
    "refresh_request",
    "refreshed_login",
]

#: Seconds before its expiry that an access token counts as expired: a token about to
#: expire is refreshed now rather than fail in the host's first request.
DEFAULT_MARGIN: Final = 60.0
#: The largest token response read. One is a few hundred bytes (a JWT access token a few
#: KB); a megabyte is not one.
MAX_TOKEN_RESPONSE_BYTES: Final = 1 << 20

# Token endpoint auth methods a client record may carry (the SDK's own list); None is the
# RFC 7591 default, "client_secret_basic" (the SDK sends nothing extra for it when unset).
# The token endpoint auth methods the SDK's client knows (its ``TokenEndpointAuthMethod``,
# a name mcp 1.x does not have); None is an unregistered method, treated as "none".
_KNOWN_AUTH_METHODS: Final[tuple[str | None, ...]] = (
    None,
    "none",
    "client_secret_post",
    "client_secret_basic",
    "private_key_jwt",
)
# What of an error response may be repeated: its RFC 6749 §5.2 ``error`` code, which is
# drawn from a fixed vocabulary and holds no secret.
_ERROR_CODE: Final = re.compile(rb'"error"\s*:\s*"([\x20-\x21\x23-\x5b\x5d-\x7e]{1,64})"')


class LoginStatus(enum.Enum):
    """What a stored login is good for, now."""

    VALID = "valid"  # its access token can be used as it is
    REFRESHABLE = "refreshable"  # expired (or about to), with what a refresh needs
    NEEDS_LOGIN = "needs login"  # nothing stored, or nothing that works without a person


def login_status(
    stored: StoredLogin | None, *, now: float, margin: float = DEFAULT_MARGIN
) -> LoginStatus:
    """Whether ``stored`` is valid at ``now``, refreshable, or needs a new login.

    Valid: an access token whose ``expires_at`` is None (the server gave no lifetime) or
    later than ``now + margin``. Refreshable: otherwise, a refresh token, a client
    registration with a client id, and server metadata naming a token endpoint.
    """
    if stored is None:
        return LoginStatus.NEEDS_LOGIN
    tokens = stored.tokens
    if tokens.access_token and (stored.expires_at is None or stored.expires_at > now + margin):
        return LoginStatus.VALID
    client = stored.client_info
    metadata = stored.oauth_metadata
    if (
        tokens.refresh_token
        and client is not None
        and client.client_id
        and metadata is not None
        and metadata.token_endpoint is not None
    ):
        return LoginStatus.REFRESHABLE
    return LoginStatus.NEEDS_LOGIN


@dataclasses.dataclass(frozen=True)
class RefreshRequest:
    """A refresh grant to POST as ``application/x-www-form-urlencoded``.

    ``form`` and ``headers`` hold the refresh token (and a client secret, if any): they
    are left out of ``repr``.
    """

    url: str
    form: Mapping[str, str] = dataclasses.field(repr=False)
    headers: Mapping[str, str] = dataclasses.field(repr=False)


def refresh_request(stored: StoredLogin, *, with_resource: bool = True) -> RefreshRequest:
    """The refresh grant for ``stored``, as the SDK builds it.

    Form: ``grant_type=refresh_token``, ``refresh_token``, ``client_id``, and ``resource``
    (RFC 8707; the canonical server URL) unless ``with_resource`` is False. The SDK sends
    ``resource`` whenever it knows the protected resource metadata or speaks MCP
    2025-06-18 or later, which is how the stored login was obtained (its authorization and
    code exchange named the resource). Client authentication as the registration says:
    ``client_secret_basic`` with a secret: an ``Authorization: Basic`` header (id and
    secret URL-encoded, RFC 6749 §2.3.1); ``client_secret_post`` with a secret: the
    secret in the form; ``none``, no method, or no secret: nothing more.

    Raises:
        OAuthProtocolError: ``stored`` has no refresh token, client id or token endpoint,
            or its registration names an authentication method the SDK does not know.
    """
    tokens = stored.tokens
    client = stored.client_info
    metadata = stored.oauth_metadata
    if not tokens.refresh_token or client is None or not client.client_id:
        raise OAuthProtocolError(f"{stored.server_url}: the stored login cannot be refreshed")
    if metadata is None or metadata.token_endpoint is None:
        raise OAuthProtocolError(f"{stored.server_url}: no token endpoint is stored")
    form: dict[str, str] = {
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token,
        "client_id": client.client_id,
    }
    if with_resource:
        form["resource"] = resource_url_from_server_url(stored.server_url)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    method = client.token_endpoint_auth_method
    secret = client.client_secret
    if method == "client_secret_basic" and secret:
        pair = f"{quote(client.client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif method == "client_secret_post" and secret:
        form["client_secret"] = secret
    elif method not in _KNOWN_AUTH_METHODS:
        raise OAuthProtocolError(
            f"{stored.server_url}: the stored registration uses an unknown token endpoint "
            "auth method"
        )
    return RefreshRequest(
        url=str(metadata.token_endpoint),
        form=types.MappingProxyType(form),
        headers=types.MappingProxyType(headers),
    )


def refreshed_login(stored: StoredLogin, status: int, body: bytes, *, now: float) -> StoredLogin:
    """The login after the token endpoint answered a refresh of ``stored`` with ``status``
    and ``body`` at ``now`` (when the request was sent).

    Raises:
        RefreshRefused: HTTP 400 or 401 (``invalid_grant``: revoked, expired or already
            rotated; ``invalid_client``): the refresh token is of no more use.
        OAuthProtocolError: any other status than 200, or a body that is not a token
            response (not JSON, no access token, a wrong type, an absurd lifetime).
    """
    where = stored.server_url
    if status in (400, 401):
        match = _ERROR_CODE.search(body[:4096]) if isinstance(body, bytes) else None
        code = f" ({match.group(1).decode('ascii')})" if match else ""
        raise RefreshRefused(
            f"{where}: the authorization server refused the stored refresh token "
            f"(HTTP {status}{code}); a new login is needed"
        )
    if status != 200:
        raise OAuthProtocolError(
            f"{where}: the token endpoint answered a refresh with HTTP {status}"
        )
    if len(body) > MAX_TOKEN_RESPONSE_BYTES:
        raise OAuthProtocolError(f"{where}: the refresh response is too large")
    try:
        token = OAuthToken.model_validate_json(body)
    except (ValueError, TypeError, RecursionError, OverflowError):  # pydantic's ValidationError
        # Not the error's text: pydantic quotes the input, which may hold a token.
        raise OAuthProtocolError(f"{where}: the refresh response is not a token response") from None
    if not token.access_token:
        raise OAuthProtocolError(f"{where}: the refresh response holds no access token")
    if token.refresh_token is None:
        token.refresh_token = stored.tokens.refresh_token  # the server does not rotate
    if token.scope is None:
        token.scope = stored.tokens.scope
    expires_at: float | None = None
    if token.expires_in is not None:
        try:
            expires_at = now + float(token.expires_in)
        except OverflowError:
            expires_at = math.inf
        if not math.isfinite(expires_at) or abs(token.expires_in) >= 2**53:
            raise OAuthProtocolError(f"{where}: the refresh response has an absurd expires_in")
    try:
        login = StoredLogin(
            server_url=stored.server_url,
            tokens=token,
            expires_at=expires_at,
            client_info=stored.client_info,
            oauth_metadata=stored.oauth_metadata,
            saved_at=now,
        )
        # What is saved must load again: the store refuses what this would refuse.
        return StoredLogin.from_dict(login.to_dict())
    except (InvalidLoginRecord, ValueError, TypeError, OverflowError):
        raise OAuthProtocolError(f"{where}: the refresh response is not a valid login") from None


class SharedTlsContext:
    """One TLS context for many refreshes (of a ``Runner``, or of a provider), built at
    the first one and reused.

    Building the HTTP client's default context parses its whole trust store: 17-75 ms of
    CPU here, which a new client per refresh paid every time, on the event loop. It is
    built in a daemon thread instead, once. It is ``runner.sdk.tls_context()``: the trust
    store and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as they are at that first refresh.
    """

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None
        self._building = anyio.Lock()

    async def get(self) -> ssl.SSLContext:
        async with self._building:
            if self._context is None:
                self._context = await in_daemon_thread("runner-tls-context", sdk.tls_context)
            return self._context


async def refresh_login(
    stored: StoredLogin, *, timeout: float, tls: SharedTlsContext | None = None
) -> StoredLogin:
    """Refresh ``stored`` at its token endpoint; the new login (not saved: the caller
    saves it).

    One POST with the SDK's own HTTP client module (``runner.sdk.http_client_module``),
    bounded by ``timeout`` seconds as a whole, no redirects followed, no environment
    proxies; over ``tls``'s context when given (else the client builds its own).

    Raises:
        RefreshRefused: the server refused the refresh token (a new login is needed).
        OAuthProtocolError: the record cannot be refreshed, the request failed, or the
            answer is not a token response.
        FlowTimeout: no answer within ``timeout``.
    """
    request = refresh_request(stored)
    http = sdk.http_client_module()
    now = time.time()  # before sending: the lifetime counts from no later than this
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            verify: ssl.SSLContext | bool = True if tls is None else await tls.get()
            async with (
                http.AsyncClient(
                    timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
                ) as client,
                client.stream(
                    "POST", request.url, data=dict(request.form), headers=dict(request.headers)
                ) as response,
            ):
                status = int(response.status_code)
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_TOKEN_RESPONSE_BYTES:
                        break
    except TimeoutError:
        raise FlowTimeout(
            f"{stored.server_url}: the token endpoint did not answer a refresh within {timeout:g} s"
        ) from None
    except http.TimeoutException:
        raise FlowTimeout(
            f"{stored.server_url}: the token endpoint did not answer a refresh in time"
        ) from None
    except (http.HTTPError, OSError, ValueError) as exc:  # ValueError: httpx's InvalidURL
        raise OAuthProtocolError(
            f"{stored.server_url}: the refresh request failed ({type(exc).__name__})"
        ) from None
    return refreshed_login(stored, status, bytes(body), now=now)
