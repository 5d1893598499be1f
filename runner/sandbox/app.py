"""The ASGI app of one sandbox server: the SDK's ``MCPServer`` with its authorization server.

(``FastMCP`` on mcp 1.x: :mod:`~runner.sandbox.compat` builds either.)

:func:`build_app` makes the SDK's own streamable-HTTP app (MCP endpoint at
:data:`~runner.sandbox.settings.MCP_PATH`, one tool ``whoami`` that answers the server's
name) with the OAuth routes of its :class:`~runner.sandbox.provider.Provider` at the same
origin, and replaces the SDK's authorization server metadata with what this server really
supports.

Invariants:
    - The app is the SDK's server side, unchanged but for the metadata route: the sandbox
      tests the runner against the real thing, not a model of it.
    - The metadata says what the token endpoint accepts (public clients included) and
      advertises RFC 9207 ``iss`` exactly when the server's behaviour says so.
    - Building an app leaves the host's root logger as it was.
    - The caller runs the returned session manager; the app's lifespan is not used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final

from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Route

from runner.sandbox.behaviour import Behaviour
from runner.sandbox.compat import ServerMetadata, mcp_app
from runner.sandbox.errors import SandboxError
from runner.sandbox.provider import Provider
from runner.sandbox.settings import HOST, MCP_PATH

__all__ = ["build_app"]

_AS_METADATA_PATH: Final = "/.well-known/oauth-authorization-server"


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
    # sends iss (RFC 9207) unless told otherwise.
    metadata.token_endpoint_auth_methods_supported = [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ]
    if behaviour.advertise_iss:
        metadata.authorization_response_iss_parameter_supported = True
    return metadata


def _replace_metadata_route(app: Starlette, metadata: ServerMetadata) -> None:
    routes = app.router.routes
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.path == _AS_METADATA_PATH:
            routes[index] = Route(
                _AS_METADATA_PATH,
                endpoint=cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
                methods=["GET", "OPTIONS"],
            )
            return
    raise SandboxError(f"the MCP SDK app has no {_AS_METADATA_PATH} route to replace")


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
    return app, sessions
