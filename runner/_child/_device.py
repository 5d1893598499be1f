"""A device login (RFC 8628) in a login's child: discovery, client, device code, polling.

``runner._child._login`` runs this instead of the SDK's authorization code flow when
``StartLogin.flow`` is ``"device"``. The SDK has no device grant; what it does for a
browser login is done here the same way, with the same checks:

- discovery as the SDK and ``runner._parent._rediscovery`` do it (``runner._core._discovery``):
  the protected resource metadata (RFC 9728; its ``resource`` must cover the server), its
  first authorization server, that server's metadata (RFC 8414; its ``issuer`` must be the
  server asked). Every endpoint used (device authorization, registration, token) comes from
  that issuer-checked document, so the device code and the tokens go to the issuer that
  grants them and to no other; the record's ``granted_by`` is that issuer;
- the client: a configured one (``client_id``, maybe a secret), a stored registration that
  has the device grant, else dynamic registration (RFC 7591) with ``grant_types``
  ``[device_code, refresh_token]``. A Client ID Metadata Document is not presented (it
  declares redirect URIs, which a device login has none of);
- the device authorization request, then the token endpoint polled at the server's
  interval, never faster than ``runner._core._device.MIN_INTERVAL``, slower after
  ``slow_down``, doubled after a poll that timed out; ``access_denied`` is
  ``AuthorizationDenied``, ``expired_token`` a ``FlowTimeout``; the caller's deadline
  (``anyio.fail_after``) bounds the whole login;
- the new access token is tried with an ``initialize`` at the MCP server, as the SDK's
  flow does, before the login is reported.

Guarantees: every response is read bounded; redirects are not followed and the
environment's proxies are not used; the device code is never logged, reported or put in a
message (only the user code and the verification addresses cross the channel); the child
never holds a refresh token beyond handing the record to the parent.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata
from mcp.shared.auth_utils import resource_url_from_server_url
from pydantic import AnyUrl, ValidationError

from runner._core._challenge import Challenge, parse_challenge
from runner._core._device import (
    DEVICE_GRANT,
    MAX_RESPONSE_BYTES,
    MIN_INTERVAL,
    DeviceAuthorization,
    Granted,
    PollAnswer,
    client_auth,
    device_endpoint,
    next_interval,
    read_authorization,
    read_poll,
)
from runner._core._discovery import (
    MAX_METADATA_BYTES,
    authorization_server_urls,
    origin,
    protected_resource_urls,
    read_resource_metadata,
    read_server_metadata,
)
from runner._core._identity import auth_method
from runner._core._messages import (
    CallbackAccepted,
    ChildMessage,
    DeviceAuthorizationStarted,
    StartLogin,
)
from runner._core._stored import StoredLogin
from runner._io._http import MCP_HEADERS, MCP_INITIALIZE, http
from runner.errors import NeedsInteraction, OAuthProtocolError

__all__ = ["device_login"]

_JSON: Final = {"Accept": "application/json"}
# One request's own bound; the login's deadline bounds them all.
_REQUEST_TIMEOUT: Final = 30.0

Report = Callable[[ChildMessage], Awaitable[None]]


class _Server:
    """What discovery found: the issuer-checked metadata and its device endpoint."""

    def __init__(
        self, metadata: OAuthMetadata, device: str, scopes: list[str] | None, issuer: str
    ) -> None:
        self.metadata = metadata
        self.device = device
        self.scopes = scopes
        self.issuer = issuer


async def _read(response: Any, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (the rest is not read)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _get(client: Any, url: str) -> bytes | None:
    async with client.stream("GET", url, headers=_JSON) as response:
        if int(response.status_code) != 200:
            return None
        return await _read(response, MAX_METADATA_BYTES)


async def _post_form(
    client: Any, url: str, form: dict[str, str], headers: dict[str, str]
) -> tuple[int, bytes]:
    async with client.stream("POST", url, data=form, headers={**_JSON, **headers}) as response:
        body = await _read(response, MAX_RESPONSE_BYTES)
        # An oversized answer is read as an empty one: the readers refuse it.
        return int(response.status_code), body or b""


async def _discover(client: Any, start: StartLogin, challenge: Challenge) -> _Server:
    server_url = start.server_url
    issuer = origin(server_url)
    scopes: list[str] | None = None
    for url in protected_resource_urls(server_url, challenge.resource_metadata):
        body = await _get(client, url)
        resource = read_resource_metadata(server_url, body) if body else None
        if resource is not None:
            issuer = str(resource.authorization_servers[0])
            scopes = list(resource.scopes_supported) if resource.scopes_supported else None
            break
    for url in authorization_server_urls(issuer):
        body = await _get(client, url)
        metadata = read_server_metadata(issuer, body) if body else None
        if metadata is None or body is None:
            continue
        device = device_endpoint(body)
        if device is None:
            raise OAuthProtocolError(
                f"{start.name}: the authorization server {issuer.rstrip('/')} does not offer "
                "the device authorization grant (no device_authorization_endpoint, or no "
                "device_code grant); log in with the browser flow instead (flow 'browser', "
                "--flow browser, or oauth.flow: browser)"
            )
        return _Server(metadata, device, scopes, issuer)
    raise OAuthProtocolError(
        f"{start.name}: no authorization server metadata was found for {issuer.rstrip('/')}; "
        "a device login needs its device_authorization_endpoint"
    )


async def _client(
    client: Any, start: StartLogin, server: _Server, scope: str | None
) -> OAuthClientInformationFull:
    supported = server.metadata.token_endpoint_auth_methods_supported
    if start.client_id is not None:
        method = auth_method(
            start.token_endpoint_auth_method,
            has_secret=bool(start.client_secret),
            supported=supported,
        )
        return OAuthClientInformationFull(
            client_id=start.client_id,
            client_secret=start.client_secret,
            redirect_uris=[AnyUrl(start.redirect_uri)],
            token_endpoint_auth_method=method,
            grant_types=[DEVICE_GRANT, "refresh_token"],
        )
    if start.client_info is not None:
        try:
            stored = OAuthClientInformationFull.model_validate(start.client_info)
        except ValidationError:
            stored = None
        if stored is not None and DEVICE_GRANT in (stored.grant_types or []):
            return stored  # registered for device logins before: reused, as the SDK does
    endpoint = server.metadata.registration_endpoint
    if endpoint is None:
        raise OAuthProtocolError(
            f"{start.name}: the authorization server offers no dynamic registration; "
            "configure a client (oauth.client_id, and client_secret if it needs one)"
        )
    request: dict[str, Any] = {
        # A loopback redirect URI the client never uses: some servers (and the SDK's own
        # model on mcp 1.x) require one in every registration.
        "redirect_uris": [start.redirect_uri],
        "client_name": start.client_name,
        "grant_types": [DEVICE_GRANT, "refresh_token"],
        "response_types": [],
        "token_endpoint_auth_method": start.token_endpoint_auth_method or "none",
    }
    if scope:
        request["scope"] = scope
    async with client.stream("POST", str(endpoint), json=request, headers=_JSON) as response:
        status = int(response.status_code)
        body = await _read(response, MAX_RESPONSE_BYTES)
    if status not in (200, 201) or body is None:
        raise OAuthProtocolError(
            f"{start.name}: the authorization server refused the registration (HTTP {status})"
        )
    try:
        answer = OAuthClientInformationFull.model_validate_json(body)
        # What the server left out stays what was asked (RFC 7591 §3.2.1 echoes it).
        merged = {**request, **answer.model_dump(mode="json", exclude_none=True)}
        return OAuthClientInformationFull.model_validate(merged)
    except (ValidationError, ValueError):
        raise OAuthProtocolError(
            f"{start.name}: the registration response is not a client registration"
        ) from None


def _auth(
    client_info: OAuthClientInformationFull, server: _Server
) -> tuple[dict[str, str], dict[str, str]]:
    method = auth_method(
        client_info.token_endpoint_auth_method,
        has_secret=bool(client_info.client_secret),
        supported=server.metadata.token_endpoint_auth_methods_supported,
    )
    return client_auth(client_info.client_id or "", client_info.client_secret, method)


async def _poll(
    client: Any,
    start: StartLogin,
    server: _Server,
    client_info: OAuthClientInformationFull,
    authorization: DeviceAuthorization,
    resource: str,
) -> Granted:
    form, headers = _auth(client_info, server)
    form.update(grant_type=DEVICE_GRANT, device_code=authorization.device_code, resource=resource)
    token_url = str(server.metadata.token_endpoint)
    interval = authorization.interval
    # Bounded by count as well as by the deadline: at most one poll per MIN_INTERVAL.
    for _ in range(math.ceil(start.time_left / MIN_INTERVAL) + 2):
        await anyio.sleep(interval)
        answer: PollAnswer | None
        try:
            status, body = await _post_form(client, token_url, dict(form), headers)
        except http.TimeoutException:
            answer = None
        else:
            answer = read_poll(status, body)  # raises on access_denied, expired_token, ...
            if isinstance(answer, Granted):
                return answer
        interval = next_interval(interval, answer)
    raise OAuthProtocolError(f"{start.name}: the device login was polled too many times")


async def _check_token(client: Any, start: StartLogin, access_token: str) -> None:
    """Try the new token at the MCP server, as the SDK's flow does with its ``initialize``."""
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
    async with client.stream(
        "POST", start.server_url, json=dict(MCP_INITIALIZE), headers=headers
    ) as response:
        status = int(response.status_code)
        again = parse_challenge(status, response.headers.get("www-authenticate"))
    if status == 401 or (status == 403 and (again is None or not again.step_up)):
        raise OAuthProtocolError(f"{start.server_url} refused the new token (HTTP {status})")


async def device_login(
    start: StartLogin,
    challenge: Challenge,
    report: Report,
    *,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Log in to ``start.server_url`` with the device authorization grant, from the server's
    ``challenge``; return the login record for ``TokensIssued``.

    ``report`` sends ``DeviceAuthorizationStarted`` (once the device code is issued) and
    ``CallbackAccepted(source="device")`` (once it is approved) to the parent.

    Raises:
        OAuthProtocolError: the server offers no device grant (the message says to use the
            browser flow), no client can be had, or an answer is malformed or refused.
        AuthorizationDenied: the person refused (``access_denied``).
        FlowTimeout: the code expired (``expired_token``).
        NeedsInteraction: ``start.interactive`` is False (a person is needed).
        and the HTTP client's errors, which the caller maps (``error_from_sdk``).
    """
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    async with http.AsyncClient(
        timeout=min(_REQUEST_TIMEOUT, max(start.time_left, 0.1)),
        follow_redirects=False,
        trust_env=False,
        verify=verify,
    ) as client:
        server = await _discover(client, start, challenge)
        advertised = " ".join(server.scopes) if server.scopes else None
        scope = start.scope or challenge.scope or advertised
        client_info = await _client(client, start, server, scope)
        if not start.interactive:
            raise NeedsInteraction(
                f"{start.name} needs a person to approve a device login (interactive=False)"
            )
        resource = resource_url_from_server_url(start.server_url)
        form, headers = _auth(client_info, server)
        form["resource"] = resource
        if scope:
            form["scope"] = scope
        status, body = await _post_form(client, server.device, form, headers)
        authorization = read_authorization(status, body)
        await report(
            DeviceAuthorizationStarted(
                user_code=authorization.user_code,
                verification_uri=authorization.verification_uri,
                verification_uri_complete=authorization.verification_uri_complete,
                expires_in=authorization.expires_in,
            )
        )
        granted = await _poll(client, start, server, client_info, authorization, resource)
        await report(CallbackAccepted(source="device"))
        tokens = granted.tokens
        if tokens.scope is None and scope:
            tokens = tokens.model_copy(update={"scope": scope})
        await _check_token(client, start, tokens.access_token)
    expires_at = None if tokens.expires_in is None else time.time() + tokens.expires_in
    return StoredLogin(
        server_url=start.server_url,
        tokens=tokens,
        expires_at=expires_at,
        client_info=client_info,
        oauth_metadata=server.metadata,
    ).to_dict()
