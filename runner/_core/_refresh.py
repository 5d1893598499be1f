"""A refresh grant, written and read: the request the SDK would send, and its answer. Pure.

The renewal policy (``runner._core._renewal``) decides when to refresh;
``runner._parent._refresher`` sends the POST. This module says what goes out and what
came back, with no I/O and no clock (``now`` is passed in). The refresh request is the one
the SDK's ``OAuthClientProvider`` builds (``_refresh_token`` and
``OAuthContext.prepare_token_auth`` in mcp 2.x), so an authorization server sees the same
grant whoever sends it.

Invariants:

- ``refreshed_login`` returns a login or raises only ``RefreshRefused`` (``invalid_grant``
  or ``invalid_client``: the server said the grant is dead; ``code`` says which) or
  ``RefreshFailed`` (anything else: ``temporary`` for 408/425/429/5xx, else a refusal
  that condemns nothing or an answer that is no token response), whatever the status and
  body (property-tested, ``tests/runner/unit/test_refresh.py``); the record it returns encodes and
  decodes (``StoredLogin.from_dict(r.to_dict())``) and keeps ``granted_by``;
- a refresh response without a refresh token keeps the old one, and one without a scope
  keeps the old scope (RFC 6749 §6; the SDK does the same); the client registration and
  the server metadata are kept as they were;
- ``retry_delay`` allows a second send only after a 429 (nothing was used up);
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
import types
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from mcp.shared.auth import OAuthToken
from mcp.shared.auth_utils import resource_url_from_server_url

from runner._core._stored import InvalidLoginRecord, StoredLogin
from runner.errors import OAuthProtocolError, RefreshFailed, RefreshRefused

__all__ = [
    "MAX_TOKEN_RESPONSE_BYTES",
    "RefreshRequest",
    "refresh_request",
    "refreshed_login",
    "retry_delay",
]

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
