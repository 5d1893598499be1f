"""The device authorization grant (RFC 8628) of a sandbox server (``Behaviour.device``).

The MCP SDK's authorization server has no device grant, so the sandbox adds one beside it,
with the SDK's own client records and token issuance (:class:`~runner.sandbox.provider.Provider`):

- :class:`DeviceRegistration`, in front of ``/register``: a registration whose
  ``grant_types`` name the device code grant is made here (the SDK's handler insists on
  ``authorization_code``); every other one goes on to the SDK's handler, body replayed;
- :class:`DeviceAuthorizationEndpoint`, ``POST /device_authorization``: authenticates the
  client, checks scope and resource, and answers a device code, a user code, the
  verification addresses, ``expires_in`` and ``interval``;
- :class:`DevicePage`, ``GET /device``: the verification page a person would open (it
  shows the code, escaped; approving is :meth:`~runner.sandbox.Sandbox.approve_device`,
  the simulated person);
- :func:`answer_device_poll`: the token endpoint's answer to a ``device_code`` grant
  (``authorization_pending`` until approved, ``slow_down`` when polled faster than the
  interval or as the knob says, ``expired_token``, ``access_denied``, then tokens once).

Invariants: bodies are read bounded (:func:`~runner.sandbox.asgi.read_body`); the page
escapes what it shows; device codes, tokens and secrets are never logged or echoed.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, unquote

from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from runner.sandbox.asgi import TooLarge, read_body, replay, respond, respond_json
from runner.sandbox.behaviour import Behaviour
from runner.sandbox.provider import DEVICE_GRANT, Provider

__all__ = [
    "DeviceAuthorizationEndpoint",
    "DevicePage",
    "DeviceRegistration",
    "authenticate",
    "form_fields",
]

_FORM: Final = "application/x-www-form-urlencoded"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def form_fields(scope: Scope, body: bytes) -> Mapping[str, str]:
    """The first value of each field of a form-encoded body (nothing for another type)."""
    content_type = _headers(scope).get(b"content-type", b"").split(b";", 1)[0].strip()
    if content_type.decode("latin-1").lower() != _FORM:
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def authenticate(
    provider: Provider, scope: Scope, form: Mapping[str, str]
) -> OAuthClientInformationFull | None:
    """The client a request authenticates as (RFC 6749 §2.3.1: ``client_secret_basic``,
    ``client_secret_post`` or a public client's ``client_id``), or None."""
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    basic = _headers(scope).get(b"authorization", b"").decode("latin-1")
    if basic[:6].lower() == "basic ":
        try:
            pair = base64.b64decode(basic[6:], validate=True).decode()
            user, _, password = pair.partition(":")
        except ValueError:
            return None
        client_id, secret = unquote(user), unquote(password)
    if not client_id:
        return None
    client = provider.lookup_client(client_id)
    if client is None:
        return None
    public = client.token_endpoint_auth_method == "none"  # noqa: S105 - a method name
    if client.client_secret and not public and secret != client.client_secret:
        return None
    return client


class DeviceRegistration:
    """ASGI app in front of the SDK's ``/register`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, provider: Provider, behaviour: Behaviour) -> None:
        self._app = app
        self._provider = provider
        self._behaviour = behaviour

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        try:
            body = await read_body(receive)
        except TooLarge:
            await respond_json(send, 413, {"error": "invalid_request"})
            return
        if body is None:
            return
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            request = None
        grants = request.get("grant_types") if isinstance(request, dict) else None
        if not isinstance(grants, list) or DEVICE_GRANT not in grants:
            await self._app(scope, replay(body, receive), send)
            return
        assert isinstance(request, dict)
        method = request.get("token_endpoint_auth_method") or "client_secret_post"
        if method not in self._behaviour.auth_methods:
            await respond_json(send, 400, _metadata_error("unsupported auth method"))
            return
        if not set(grants) <= {DEVICE_GRANT, "refresh_token", "authorization_code"}:
            await respond_json(send, 400, _metadata_error("unsupported grant type"))
            return
        asked = request.get("scope")
        if asked is not None and (
            not isinstance(asked, str) or not set(asked.split()) <= self._provider.valid_scopes()
        ):
            await respond_json(send, 400, _metadata_error("unknown scope"))
            return
        try:
            client = self._provider.new_client(request, method)
        except (ValidationError, ValueError, TypeError):
            await respond_json(send, 400, _metadata_error("malformed client metadata"))
            return
        await self._provider.register_client(client)
        await respond(
            send, 201, client.model_dump_json(exclude_none=True).encode(), content_type=_JSON
        )


_JSON: Final = "application/json"


def _metadata_error(description: str) -> dict[str, str]:
    return {"error": "invalid_client_metadata", "error_description": description}


class DeviceAuthorizationEndpoint:
    """ASGI app of ``POST /device_authorization`` (RFC 8628 §3.1-3.2)."""

    def __init__(self, *, provider: Provider) -> None:
        self._provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await respond_json(send, 405, {"error": "invalid_request"}, {"Allow": "POST"})
            return
        try:
            body = await read_body(receive)
        except TooLarge:
            await respond_json(send, 413, {"error": "invalid_request"})
            return
        if body is None:
            return
        form = form_fields(scope, body)
        client = authenticate(self._provider, scope, form)
        if client is None:
            await respond_json(send, 401, {"error": "invalid_client"})
            return
        status, answer = self._provider.start_device(
            client, form.get("scope"), form.get("resource")
        )
        await respond_json(send, status, answer)


class DevicePage:
    """ASGI app of ``GET /device``: the verification page, escaped."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        code = query.get("user_code", "")[:64]
        shown = f"<p>Code: <code>{html.escape(code)}</code></p>" if code else ""
        page = (
            "<!doctype html><title>sandbox device login</title>"
            "<h1>Sandbox device login</h1>"
            f"<p>Enter the code your device shows.</p>{shown}"
        ).encode()
        body = b"" if scope["method"] == "HEAD" else page
        await respond(send, 200, body, content_type="text/html; charset=utf-8")
