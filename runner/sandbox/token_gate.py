"""The layer in front of the SDK's token endpoint: client methods, CIMD refusal, refresh faults.

:class:`TokenGate` reads each ``POST /token`` form (bounded) before the SDK's token handler
does, records every refresh-token presentation, refuses clients whose authentication method
the server does not accept and (``cimd="refuse"``) the code exchange of a client ID metadata
document client, and answers refresh grants the way
:attr:`~runner.sandbox.behaviour.Behaviour.refresh_fault` and ``refresh_delay`` say. Whatever
it does not answer itself goes on to the SDK's handler with the body replayed.

Invariants:
    - Authorization-code exchanges are never delayed or faulted here (``hang`` is the
      provider's); only a refresh grant is.
    - Every refresh grant (``grant_type=refresh_token`` with a ``refresh_token`` in a
      form-encoded body) is recorded once, on arrival, before anything can refuse it.
    - Faults that answer without the SDK's handler (``server_error``, ``invalid_request``,
      ``html``, ``rate_limited``'s 429, a delay cut short by the stop) rotate nothing:
      the provider never sees the request. ``garbled_after_rotation`` is the one fault that
      lets the grant be served and then spoils the answer.
    - A delay ends when the sandbox stops, so a stop is never held up by it.
    - Tokens, secrets and codes stay in the request and in the provider's memory: nothing
      here logs or echoes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from runner.sandbox.asgi import TooLarge, capture, read_body, replay, respond, respond_json
from runner.sandbox.behaviour import Behaviour
from runner.sandbox.device import authenticate
from runner.sandbox.provider import DEVICE_GRANT, Provider, is_cimd_client_id

__all__ = ["TokenGate"]

_FORM: Final = "application/x-www-form-urlencoded"
_HTML_PAGE: Final = (
    b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n"
    b"<center><h1>400 Bad Request</h1></center>\r\n<hr><center>proxy</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
#: What ``garbled_after_rotation`` answers instead of the tokens: a cut-off JSON object.
GARBLED_BODY: Final = b'{"access_token": "'


def _form(scope: Scope, body: bytes) -> Mapping[str, str]:
    """The first value of each field of a form-encoded body (nothing for another type)."""
    headers = dict(scope.get("headers", []))
    content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().decode("latin-1")
    if content_type.lower() != _FORM:
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


class TokenGate:
    """ASGI app in front of the SDK's token endpoint ``app`` (see the module docstring)."""

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
        if body is None:  # the client went away
            return
        receive = replay(body, receive)
        form = _form(scope, body)
        grant_type = form.get("grant_type")
        presented = form.get("refresh_token") if grant_type == "refresh_token" else None
        seen = self._provider.note_refresh_presentation(presented) if presented else 0
        client_id = form.get("client_id")
        if client_id:
            refusal = self._refusal(client_id, grant_type)
            if refusal is not None:
                await respond_json(
                    send, 401, {"error": "invalid_client", "error_description": refusal}
                )
                return
        if grant_type == DEVICE_GRANT and self._behaviour.device:
            # The SDK's token handler has no device grant: answered here (RFC 8628 §3.4-3.5).
            client = authenticate(self._provider, scope, form)
            if client is None:
                await respond_json(send, 401, {"error": "invalid_client"})
                return
            status, answer = self._provider.poll_device(client, form.get("device_code", ""))
            await respond_json(send, status, answer)
        elif grant_type == "refresh_token":
            await self._refresh(scope, receive, send, first_presentation=seen == 1)
        else:
            await self._app(scope, receive, send)

    def _refusal(self, client_id: str, grant_type: str | None) -> str | None:
        """Why the client is refused here, or None (the SDK's checks follow)."""
        client = self._provider.lookup_client(client_id)
        if client is None:
            return None
        method = client.token_endpoint_auth_method or "client_secret_post"
        if method not in self._behaviour.auth_methods:
            return f"this server does not accept token_endpoint_auth_method {method}"
        if (
            grant_type == "authorization_code"
            and self._behaviour.cimd == "refuse"
            and is_cimd_client_id(client_id)
        ):
            return "this server refuses client ID metadata documents"
        return None

    async def _refresh(
        self, scope: Scope, receive: Receive, send: Send, *, first_presentation: bool
    ) -> None:
        behaviour = self._behaviour
        if behaviour.refresh_delay > 0 and await self._provider.stopped_within(
            behaviour.refresh_delay
        ):
            await respond_json(send, 503, {"error": "temporarily_unavailable"})
            return
        fault = behaviour.refresh_fault
        if fault == "server_error":
            await respond(send, 500, b"Internal Server Error", content_type="text/plain")
        elif fault == "invalid_request":
            await respond_json(
                send,
                400,
                {"error": "invalid_request", "error_description": "the sandbox refuses refresh"},
            )
        elif fault == "html":
            await respond(send, 400, _HTML_PAGE, content_type="text/html")
        elif fault == "rate_limited" and first_presentation:
            await respond(
                send,
                429,
                b"Too Many Requests",
                content_type="text/plain",
                headers={"Retry-After": "1"},
            )
        elif fault == "garbled_after_rotation":
            answer = await capture(self._app, scope, receive)
            if answer.status == 200:
                await respond(send, 200, GARBLED_BODY)
            else:
                await answer.send_to(send)
        else:  # "none", a later "rate_limited" presentation, "early_refusal" (the provider's)
            await self._app(scope, receive, send)
