"""The ASGI app of one sandbox server: the SDK's ``MCPServer`` with its authorization server.

(``FastMCP`` on mcp 1.x: :mod:`~runner.sandbox.compat` builds either.)

:func:`build_app` makes the SDK's own streamable-HTTP app (MCP endpoint at
:data:`~runner.sandbox.settings.MCP_PATH`, one tool ``whoami`` that answers the server's
name) with the OAuth routes of its :class:`~runner.sandbox.provider.Provider` at the same
origin, replaces the SDK's authorization server metadata with what this server really
supports, puts a :class:`~runner.sandbox.token_gate.TokenGate` in front of the token endpoint
and, when the behaviour asks for ``open_initialize`` or ``step_up_scope``, a
:class:`~runner.sandbox.resource_gate.ResourceGate` in front of the MCP endpoint.

Invariants:
    - The app is the SDK's server side, unchanged but for the metadata route and the gates
      in front of two of its endpoints: the sandbox tests the runner against the real thing,
      not a model of it. The gates hand everything they do not answer themselves to the
      SDK's handlers, bodies replayed unchanged.
    - The metadata says what the token endpoint accepts (``auth_methods``; public clients
      by default), advertises RFC 9207 ``iss`` exactly when the server's behaviour says so,
      the registration endpoint exactly when registration is on, and
      ``client_id_metadata_document_supported`` exactly when ``cimd`` is not ``"off"``.
    - Building an app leaves the host's root logger as it was.
    - The caller runs the returned session manager; the app's lifespan is not used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final

from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from runner.sandbox.asgi import respond_json
from runner.sandbox.behaviour import Behaviour
from runner.sandbox.compat import ServerMetadata, mcp_app
from runner.sandbox.device import DeviceAuthorizationEndpoint, DevicePage, DeviceRegistration
from runner.sandbox.errors import SandboxError
from runner.sandbox.provider import DEVICE_GRANT, Provider
from runner.sandbox.resource_gate import ResourceGate
from runner.sandbox.settings import HOST, MCP_PATH
from runner.sandbox.token_gate import TokenGate

__all__ = ["build_app"]

_AS_METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
_TOKEN_PATH: Final = "/token"  # noqa: S105 - a path
_REVOKE_PATH: Final = "/revoke"
_REGISTER_PATH: Final = "/register"
#: The device authorization endpoint and the verification page (``Behaviour.device``).
DEVICE_AUTHORIZATION_PATH: Final = "/device_authorization"
DEVICE_PAGE_PATH: Final = "/device"


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """Keep ``MCPServer()`` from configuring the host's root logger.

    ``MCPServer.__init__`` calls ``logging.basicConfig``, which installs a handler on the root
    logger when it has none. With a handler present, basicConfig does nothing.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


def _metadata(settings: AuthSettings, behaviour: Behaviour) -> ServerMetadata:
    """The SDK's metadata, plus what this authorization server really supports."""
    registration = settings.client_registration_options or ClientRegistrationOptions()
    revocation = settings.revocation_options or RevocationOptions()
    built = build_metadata(settings.issuer_url, None, registration, revocation)
    # The issuer as configured: mcp 1.x's OAuthMetadata would append a slash.
    metadata = ServerMetadata.model_validate(
        {**built.model_dump(), "issuer": str(settings.issuer_url)}
    )
    # The SDK omits both: its token endpoint accepts public clients ("none"), and this server
    # sends iss (RFC 9207) unless told otherwise. The token gate enforces the list.
    metadata.token_endpoint_auth_methods_supported = list(behaviour.auth_methods)
    if behaviour.revocation == "off":
        metadata.revocation_endpoint = None
        metadata.revocation_endpoint_auth_methods_supported = None
    if behaviour.advertise_iss:
        metadata.authorization_response_iss_parameter_supported = True
    if behaviour.cimd != "off":
        metadata.client_id_metadata_document_supported = True
    if behaviour.device:
        issuer = str(settings.issuer_url).rstrip("/")
        metadata.device_authorization_endpoint = AnyHttpUrl(issuer + DEVICE_AUTHORIZATION_PATH)
        metadata.grant_types_supported = [*(metadata.grant_types_supported or []), DEVICE_GRANT]
    return metadata


def _find_route(routes: list[BaseRoute], path: str) -> tuple[int, Route]:
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.path == path:
            return index, route
    raise SandboxError(f"the MCP SDK app has no {path} route to replace")


def _replace_metadata_route(app: Starlette, metadata: ServerMetadata) -> None:
    routes = app.router.routes
    index, _ = _find_route(routes, _AS_METADATA_PATH)
    routes[index] = Route(
        _AS_METADATA_PATH,
        endpoint=cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
        methods=["GET", "OPTIONS"],
    )


def _set_revocation_route(app: Starlette, behaviour: Behaviour) -> None:
    """``Behaviour.revocation``: the SDK's ``/revoke`` as it is, gone, or answering 503."""
    if behaviour.revocation == "on":
        return
    routes = app.router.routes
    index, _ = _find_route(routes, _REVOKE_PATH)
    if behaviour.revocation == "off":
        del routes[index]
        return

    routes[index] = Route(_REVOKE_PATH, endpoint=_Unavailable(), methods=["POST", "OPTIONS"])


class _Unavailable:
    """An endpoint that is down: HTTP 503 ``temporarily_unavailable``, ``Retry-After: 30``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(
            send, 503, {"error": "temporarily_unavailable"}, headers={"Retry-After": "30"}
        )


def _gate_token_route(app: Starlette, provider: Provider, behaviour: Behaviour) -> None:
    routes = app.router.routes
    index, route = _find_route(routes, _TOKEN_PATH)
    routes[index] = Route(
        _TOKEN_PATH,
        endpoint=TokenGate(route.app, provider=provider, behaviour=behaviour),
        methods=["POST", "OPTIONS"],
    )


def _gate_mcp_route(app: Starlette, behaviour: Behaviour) -> None:
    routes = app.router.routes
    index, route = _find_route(routes, MCP_PATH)
    if not isinstance(route.app, RequireAuthMiddleware):
        raise SandboxError(f"the MCP SDK app does not guard {MCP_PATH} with RequireAuthMiddleware")
    routes[index] = Route(MCP_PATH, endpoint=ResourceGate(route.app, behaviour=behaviour))


def _add_device_routes(app: Starlette, provider: Provider, behaviour: Behaviour) -> None:
    routes = app.router.routes
    if behaviour.registration:
        index, route = _find_route(routes, _REGISTER_PATH)
        routes[index] = Route(
            _REGISTER_PATH,
            endpoint=DeviceRegistration(route.app, provider=provider, behaviour=behaviour),
            methods=["POST", "OPTIONS"],
        )
    routes.append(
        Route(
            DEVICE_AUTHORIZATION_PATH,
            endpoint=DeviceAuthorizationEndpoint(provider=provider),
            methods=["POST"],
        )
    )
    routes.append(Route(DEVICE_PAGE_PATH, endpoint=DevicePage(), methods=["GET", "HEAD"]))


def build_app(
    name: str, settings: AuthSettings, provider: Provider, behaviour: Behaviour
) -> tuple[Starlette, StreamableHTTPSessionManager]:
    """The ASGI app of one server, and its MCP session manager (which the caller must run)."""

    def whoami() -> str:
        """The name of the sandbox server that answers."""
        return name

    with _root_logging_untouched():
        app, sessions = mcp_app(
            name,
            provider=provider,
            settings=settings,
            tools={"whoami": whoami},
            path=MCP_PATH,
            host=HOST,
        )
    _replace_metadata_route(app, _metadata(settings, behaviour))
    _set_revocation_route(app, behaviour)
    _gate_token_route(app, provider, behaviour)
    if behaviour.device:
        _add_device_routes(app, provider, behaviour)
    if behaviour.open_initialize or behaviour.step_up_scope is not None:
        _gate_mcp_route(app, behaviour)
    return app, sessions
