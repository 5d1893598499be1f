"""The layer in front of the SDK's MCP endpoint: ``initialize`` without a token, step-up scope.

The SDK guards the MCP endpoint with its ``RequireAuthMiddleware`` (a valid token with the
required scope, or 401/403). :class:`ResourceGate` takes that guard apart and puts itself in
front of it when a server's :class:`~runner.sandbox.behaviour.Behaviour` asks for one of:

- ``open_initialize``: a POST without a valid token whose JSON-RPC messages are all
  ``initialize`` or ``notifications/*`` is served without one (as by MCP servers that protect
  only their tools); any other request without a valid token gets the 401 challenge, with
  ``scope="<SCOPE>"`` added. A session opened that way may go on with a token: the SDK
  (2.x) ties a session to the credential that opened it, which here was none, so requests of
  such a session reach the session manager as they opened it, unauthenticated, after the
  gate has checked their token.
- ``step_up_scope``: a valid token without that scope gets HTTP 403 ``insufficient_scope``
  (``scope="<SCOPE> <step_up_scope>"``) for a POST carrying ``tools/call``; every other
  request needs only the normal scope, as before.

Invariants:
    - Requests with a valid token and the normal scope, other than a ``tools/call`` lacking
      the step-up scope, are served as the SDK's guard serves them; so is everything when
      neither knob is set (then the gate is not installed at all).
    - A body is read (bounded, :data:`~runner.sandbox.asgi.BODY_LIMIT`) only when the
      decision depends on it, and is then replayed unchanged to the SDK's endpoint.
    - The set of sessions opened without a token is bounded (oldest forgotten first) and
      belongs to one server's gate; no token is kept or logged here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, RequireAuthMiddleware
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.sandbox.asgi import TooLarge, read_body, replay, respond_json
from runner.sandbox.behaviour import Behaviour

__all__ = ["ResourceGate"]

_SESSION_HEADER: Final = b"mcp-session-id"
_MAX_ANONYMOUS_SESSIONS: Final = 1024
_TOOLS_CALL: Final = "tools/call"


def _jsonrpc_methods(body: bytes) -> tuple[str, ...]:
    """The method of each JSON-RPC message in ``body`` (``""`` for one that has none, such
    as a response); nothing if it is not JSON-RPC at all."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ()
    messages = parsed if isinstance(parsed, list) else [parsed]
    methods: list[str] = []
    for message in messages:
        method = message.get("method") if isinstance(message, dict) else None
        methods.append(method if isinstance(method, str) else "")
    return tuple(methods)


def _open_without_token(methods: Sequence[str]) -> bool:
    return bool(methods) and all(
        method == "initialize" or method.startswith("notifications/") for method in methods
    )


def _header_value(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class ResourceGate:
    """ASGI app in place of the SDK's guarded MCP endpoint (see the module docstring).

    Args:
        guard: The SDK's ``RequireAuthMiddleware`` around the streamable-HTTP endpoint.
        behaviour: The server's behaviour (``open_initialize``, ``step_up_scope``).
    """

    def __init__(self, guard: RequireAuthMiddleware, *, behaviour: Behaviour) -> None:
        self._endpoint: ASGIApp = guard.app
        self._required = [str(scope) for scope in guard.required_scopes]
        self._metadata_url = (
            str(guard.resource_metadata_url) if guard.resource_metadata_url is not None else None
        )
        self._open_initialize = behaviour.open_initialize
        self._step_up = behaviour.step_up_scope
        # The SDK's own checks, in front of the endpoint as this gate hands it requests.
        self._guard = RequireAuthMiddleware(
            self._to_endpoint, self._required, guard.resource_metadata_url
        )
        self._anonymous_sessions: dict[str, None] = {}  # insertion-ordered; loop thread only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        authenticated = isinstance(user, AuthenticatedUser)
        methods: tuple[str, ...] = ()
        reads_body = (self._open_initialize and not authenticated) or (
            self._step_up is not None and authenticated
        )
        if reads_body and scope["type"] == "http" and scope["method"] == "POST":
            try:
                body = await read_body(receive)
            except TooLarge:
                await respond_json(send, 413, {"error": "request body too large"})
                return
            if body is None:  # the client went away
                return
            receive = replay(body, receive)
            methods = _jsonrpc_methods(body)
        if not authenticated:
            if not self._open_initialize:
                await self._guard(scope, receive, send)
            elif _open_without_token(methods):
                await self._endpoint(scope, receive, self._noting_session(scope, send))
            else:
                await self._challenge(
                    send, 401, "invalid_token", "Authentication required", self._required
                )
            return
        if self._step_up is not None and _TOOLS_CALL in methods:
            auth = scope.get("auth")
            granted = set(auth.scopes) if isinstance(auth, AuthCredentials) else set()
            if set(self._required) <= granted and self._step_up not in granted:
                await self._challenge(
                    send,
                    403,
                    "insufficient_scope",
                    f"{_TOOLS_CALL} requires scope {self._step_up}",
                    [*self._required, self._step_up],
                    describe=False,
                )
                return
        await self._guard(scope, receive, send)

    async def _to_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Behind the SDK's guard: a session opened without a token stays unauthenticated."""
        session = _header_value(scope, _SESSION_HEADER)
        if session is not None and session in self._anonymous_sessions:
            scope = {**scope, "user": UnauthenticatedUser(), "auth": AuthCredentials()}
        await self._endpoint(scope, receive, send)

    def _noting_session(self, scope: Scope, send: Send) -> Send:
        """``send``, noting the session an unauthenticated ``initialize`` opens."""
        if _header_value(scope, _SESSION_HEADER) is not None:
            return send  # not an opening request

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                for key, value in message.get("headers", []):
                    if key.lower() == _SESSION_HEADER:
                        self._note_anonymous(bytes(value).decode("latin-1"))
            await send(message)

        return noting

    def _note_anonymous(self, session: str) -> None:
        sessions = self._anonymous_sessions
        sessions[session] = None
        for _ in range(len(sessions) - _MAX_ANONYMOUS_SESSIONS):
            del sessions[next(iter(sessions))]

    async def _challenge(
        self,
        send: Send,
        status: int,
        error: str,
        description: str,
        scopes: Sequence[str],
        *,
        describe: bool = True,
    ) -> None:
        """A Bearer challenge (RFC 6750 section 3) naming the scopes and the resource metadata."""
        parts = [f'error="{error}"']
        if describe:
            parts.append(f'error_description="{description}"')
        parts.append(f'scope="{" ".join(scopes)}"')
        if self._metadata_url is not None:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        await respond_json(
            send,
            status,
            {"error": error, "error_description": description},
            headers={"WWW-Authenticate": "Bearer " + ", ".join(parts)},
        )
