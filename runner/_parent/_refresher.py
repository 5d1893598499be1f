"""Refreshing a stored login in the parent: the request, the answer, the one POST.

The renewal policy (``runner._core._renewal``) decides when; this module does it. The refresh
request is the one the SDK's ``OAuthClientProvider`` builds (``_refresh_token`` and
``OAuthContext.prepare_token_auth`` in mcp 2.x), so an authorization server sees the same
grant whoever sends it.

Pure (no I/O, no clock: ``now`` is passed in): ``refresh_request``, ``refreshed_login``,
``retry_delay``. I/O: ``refresh_login`` (the POST, retried only where nothing was used up).

Invariants:

- ``refreshed_login`` returns a login or raises only ``RefreshRefused`` (``invalid_grant``
  or ``invalid_client``: the server said the grant is dead; ``code`` says which) or
  ``RefreshFailed`` (anything else: ``temporary`` for 408/425/429/5xx, else a refusal
  that condemns nothing or an answer that is no token response), whatever the status and
  body (property-tested, ``tests/unit/test_refresh.py``); the record it returns encodes and
  decodes (``StoredLogin.from_dict(r.to_dict())``) and keeps ``granted_by``;
- a refresh response without a refresh token keeps the old one, and one without a scope
  keeps the old scope (RFC 6749 §6; the SDK does the same); the client registration and
  the server metadata are kept as they were;
- ``refresh_login`` sends the refresh token again only where the server used nothing up:
  once more after a first ``invalid_client`` (hermes-agent #109852: one is not proof),
  and after a 429 whose ``Retry-After`` ends within the timeout (at most
  ``MAX_REFRESH_SENDS`` sends in all); never after a 5xx, a network error or an unreadable
  answer, which may have rotated it;
- ``refresh_login`` is bounded by its ``timeout`` as a whole, reads at most
  ``MAX_TOKEN_RESPONSE_BYTES``, never follows a redirect, ignores proxy and certificate
  settings from the environment (``trust_env=False``), and raises only ``RefreshRefused``
  or ``RefreshFailed`` (and cancellation);
- no message and no ``repr`` shows a token, a client secret or the server's answer
  (``RefreshRequest`` hides its form and headers; only an RFC 6749 error code is quoted).
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
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

from runner._core._stored import InvalidLoginRecord, StoredLogin
from runner._io import _http as sdk
from runner._io._threads import in_daemon_thread
from runner.errors import OAuthProtocolError, RefreshFailed, RefreshRefused

__all__ = [
    "MAX_REFRESH_SENDS",
    "MAX_TOKEN_RESPONSE_BYTES",
    "RefreshRequest",
    "SharedTlsContext",
    "refresh_login",
    "refresh_request",
    "refreshed_login",
    "retry_delay",
]

#: The most times one refresh sends its refresh token: after a first ``invalid_client`` and
#: after a 429, when the server has used nothing up.
MAX_REFRESH_SENDS: Final = 3
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
_ERROR_CODE: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")
#: Statuses that say "not now" rather than "no": nothing was used up.
_TEMPORARY: Final = frozenset({408, 425, 429})
#: The pause before sending again after a first ``invalid_client``, at most.
_INVALID_CLIENT_PAUSE: Final = 1.0


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
        RefreshRefused: ``invalid_grant`` or ``invalid_client`` (``code`` says which), with
            HTTP 400 or 401: the server says the grant is dead.
        RefreshFailed: anything else that is not a token response. ``temporary`` for HTTP
            408, 425, 429 and 5xx (nothing was said); otherwise a refusal that condemns
            nothing (``invalid_request``, a proxy's page) or an unreadable answer.
    """
    where = stored.server_url
    if status != 200:
        code = _error_code(body) if status in (400, 401) else None
        if code in ("invalid_grant", "invalid_client"):
            raise RefreshRefused(
                f"{where}: the authorization server refused the stored refresh token "
                f"(HTTP {status} {code}); a new login is needed",
                code=code,
            )
        temporary = status in _TEMPORARY or 500 <= status <= 599
        said = f"HTTP {status}{f' {code}' if code else ''}"
        raise RefreshFailed(
            f"{where}: the token endpoint answered a refresh with {said}; "
            "the stored login was kept",
            temporary=temporary,
        )
    if len(body) > MAX_TOKEN_RESPONSE_BYTES:
        raise _unreadable(where, "is too large")
    try:
        token = OAuthToken.model_validate_json(body)
    except (ValueError, TypeError, RecursionError, OverflowError):  # pydantic's ValidationError
        # Not the error's text: pydantic quotes the input, which may hold a token.
        raise _unreadable(where, "is not a token response") from None
    if not token.access_token:
        raise _unreadable(where, "holds no access token")
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
            raise _unreadable(where, "has an absurd expires_in")
    try:
        login = stored.replace(tokens=token, expires_at=expires_at, saved_at=now)
        # What is saved must load again: the store refuses what this would refuse.
        return StoredLogin.from_dict(login.to_dict())
    except (InvalidLoginRecord, ValueError, TypeError, OverflowError):
        raise _unreadable(where, "is not a valid login") from None


def retry_delay(status: int, retry_after: str | None, *, now: float) -> float | None:
    """Seconds to wait before sending a refresh again after ``status``, or None when it must
    not be sent again. Only a 429 is retried (the request was not served): after its
    ``Retry-After`` (seconds, or an HTTP date), or 1 s without one."""
    if status != 429:
        return None
    if retry_after is None:
        return 1.0
    value = retry_after.strip()
    if value.isascii() and value.isdigit():
        return float(int(value[:12]))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _error_code(body: bytes) -> str | None:
    """The RFC 6749 §5.2 ``error`` code of an error response, if it has a readable one."""
    if len(body) > 65536:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _unreadable(where: str, what: str) -> RefreshFailed:
    return RefreshFailed(
        f"{where}: the refresh response {what}; the stored login was kept", temporary=False
    )


class SharedTlsContext:
    """One TLS context for many refreshes (of a ``Runner``, or of a provider), built at
    the first one and reused.

    Building the HTTP client's default context parses its whole trust store: 17-75 ms of
    CPU here, which a new client per refresh paid every time, on the event loop. It is
    built in a daemon thread instead, once. It is ``runner._child._sdk.tls_context()``: the trust
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

    POSTs with the SDK's own HTTP client module (``runner._child._sdk.http_client_module``), bounded
    by ``timeout`` seconds as a whole, no redirects followed, no environment proxies; over
    ``tls``'s context when given (else the client builds its own). The refresh token is sent
    again only after a first ``invalid_client`` and after a 429 (see the module docstring).

    Raises:
        RefreshRefused: the server said the refresh token is dead (a new login is needed).
        RefreshFailed: the refresh did not work and nothing was condemned (``temporary``:
            try again later); also when ``stored`` cannot be refreshed at all.
    """
    try:
        request = refresh_request(stored)
    except OAuthProtocolError as exc:
        raise RefreshFailed(exc.message, temporary=False) from None
    http = sdk.http_client_module()
    where = stored.server_url
    deadline = time.monotonic() + timeout
    invalid_client_seen = False
    try:
        with anyio.fail_after(timeout):
            verify: ssl.SSLContext | bool = True if tls is None else await tls.get()
            async with http.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
            ) as client:
                for sends in range(1, MAX_REFRESH_SENDS + 1):
                    now = time.time()  # before sending: the lifetime counts from no later
                    status, body, retry_after = await _post(client, request)
                    try:
                        return refreshed_login(stored, status, body, now=now)
                    except RefreshRefused as exc:
                        if exc.code != "invalid_client" or invalid_client_seen:
                            raise
                        invalid_client_seen = True
                        pause: float | None = _INVALID_CLIENT_PAUSE
                        failure: Exception = exc
                    except RefreshFailed as exc:
                        pause = retry_delay(status, retry_after, now=time.time())
                        failure = exc
                    left = deadline - time.monotonic()
                    if pause is None or sends == MAX_REFRESH_SENDS or pause >= left:
                        raise failure
                    await anyio.sleep(pause)
    except TimeoutError:
        raise RefreshFailed(
            f"{where}: the token endpoint did not answer a refresh within {timeout:g} s; "
            "the stored login was kept",
            temporary=True,
        ) from None
    except http.TimeoutException:
        raise RefreshFailed(
            f"{where}: the token endpoint did not answer a refresh in time; "
            "the stored login was kept",
            temporary=True,
        ) from None
    except (http.HTTPError, OSError, ValueError) as exc:  # ValueError: httpx's InvalidURL
        raise RefreshFailed(
            f"{where}: the refresh request failed ({type(exc).__name__}); "
            "the stored login was kept",
            temporary=True,
        ) from None
    raise AssertionError("unreachable: the last send returns or raises")  # pragma: no cover


async def _post(client: object, request: RefreshRequest) -> tuple[int, bytes, str | None]:
    """One POST of ``request``: the status, at most ``MAX_TOKEN_RESPONSE_BYTES + 1`` bytes
    of the body, and the ``Retry-After`` header."""
    body = bytearray()
    async with client.stream(  # type: ignore[attr-defined]
        "POST", request.url, data=dict(request.form), headers=dict(request.headers)
    ) as response:
        status = int(response.status_code)
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_TOKEN_RESPONSE_BYTES:
                break
        retry_after = response.headers.get("retry-after")
    return status, bytes(body), retry_after
