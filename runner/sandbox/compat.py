"""The sandbox's one switch between the MCP SDK's majors (server side, and its token client).

Measured on mcp 1.26.0, 2.0.0 (with httpx2 2.7.0) and 2.3.0; what differs for the sandbox:

- the server class: 2.x ``mcp.server.mcpserver.MCPServer``, whose ``streamable_http_app``
  takes the MCP path and host; 1.x ``mcp.server.fastmcp.FastMCP``, which takes them in its
  constructor (:func:`mcp_app`);
- the HTTP client the SDK's streamable-HTTP client takes: ``httpx2`` on 2.x, ``httpx`` on 1.x
  (:data:`http`);
- the authorization error for a foreign resource (RFC 8707 ``invalid_target``): 1.x's
  ``AuthorizationErrorCode`` lacks it and its handler fails validating the error, so 1.x gets
  ``invalid_request`` (:data:`INVALID_TARGET`);
- ``OAuthMetadata``: 1.x has no ``authorization_response_iss_parameter_supported``
  (:class:`ServerMetadata` adds it);
- URLs: 1.x's ``AuthSettings`` and ``OAuthMetadata`` append ``/`` to a path-less URL, so the
  issuer would not be the one the sandbox promises (:class:`ServerAuthSettings`);
- token models: see :mod:`~runner.sandbox.provider`, which declares the fields it needs itself;
- 1.x's ``FastMCP`` settings model needs a rebuild before use (see below).

Every other sandbox module imports the SDK's names that differ from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import mcp.shared.auth
from mcp.server.auth.provider import AuthorizationErrorCode, OAuthAuthorizationServerProvider
from mcp.server.auth.settings import AuthSettings
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.auth import OAuthMetadata
from pydantic import AnyHttpUrl, ConfigDict
from starlette.applications import Starlette

__all__ = ["INVALID_TARGET", "MCP_V2", "ServerAuthSettings", "ServerMetadata", "http", "mcp_app"]

#: The same feature test as ``runner.sdk`` (which the sandbox must not import):
#: ``AuthorizationCodeResult`` came with 2.0. True on mcp 2.x, False on 1.x.
MCP_V2: Final[bool] = hasattr(mcp.shared.auth, "AuthorizationCodeResult")


if TYPE_CHECKING or MCP_V2:  # mypy runs on the newest SDK only: it sees the 2.x names
    import httpx2 as http
    from mcp.server.mcpserver import MCPServer

    def _new_server(
        name: str,
        provider: OAuthAuthorizationServerProvider[Any, Any, Any],
        settings: AuthSettings,
        path: str,
        host: str,
    ) -> MCPServer[object]:
        return MCPServer(
            name=name, auth_server_provider=provider, auth=settings, log_level="WARNING"
        )

    def _streamable_http_app(server: MCPServer[object], path: str, host: str) -> Starlette:
        return server.streamable_http_app(streamable_http_path=path, host=host)

else:  # mcp 1.x: FastMCP takes the MCP path and host in its constructor
    import httpx as http
    from mcp.server.fastmcp import FastMCP
    from mcp.server.fastmcp.server import Settings as _FastMCPSettings

    # FastMCP's settings name FastMCP in a forward reference, so every FastMCP() warns
    # (IncompleteFieldDefinitionWarning, measured with pydantic-settings 2.16.3) until the
    # model is rebuilt, as the warning asks; by now FastMCP is defined and the rebuild holds.
    _FastMCPSettings.model_rebuild()

    def _new_server(name, provider, settings, path, host):
        return FastMCP(
            name=name,
            auth_server_provider=provider,
            auth=settings,
            log_level="WARNING",
            streamable_http_path=path,
            host=host,
        )

    def _streamable_http_app(server, path, host):
        return server.streamable_http_app()


INVALID_TARGET: Final[AuthorizationErrorCode] = "invalid_target" if MCP_V2 else "invalid_request"


class ServerAuthSettings(AuthSettings):
    """The SDK's auth settings, keeping a path-less URL as written: 2.x's model does so itself,
    1.x's appends a slash (measured: ``http://127.0.0.1:P/``), and an issuer is compared as a
    string (RFC 8414, RFC 9207)."""

    model_config = ConfigDict(url_preserve_empty_path=True)


class ServerMetadata(OAuthMetadata):
    """The SDK's authorization server metadata, with RFC 9207's field and the issuer as
    written (see :class:`ServerAuthSettings`) on every major."""

    model_config = ConfigDict(url_preserve_empty_path=True)

    authorization_response_iss_parameter_supported: bool | None = None
    #: RFC 8628 §4, which neither major's model has (``Behaviour.device``).
    device_authorization_endpoint: AnyHttpUrl | None = None


def mcp_app(
    name: str,
    *,
    provider: OAuthAuthorizationServerProvider[Any, Any, Any],
    settings: AuthSettings,
    tools: Mapping[str, Callable[[], str]],
    path: str,
    host: str,
) -> tuple[Starlette, StreamableHTTPSessionManager]:
    """The SDK's streamable-HTTP app of one MCP server (MCP endpoint at ``path``, OAuth routes
    of ``provider``), and its session manager, which the caller runs.

    ``MCPServer()`` (``FastMCP()`` on 1.x) calls ``logging.basicConfig``: the caller guards
    the root logger.
    """
    server = _new_server(name, provider, settings, path, host)
    for tool_name, tool in tools.items():
        server.tool(name=tool_name)(tool)
    return _streamable_http_app(server, path, host), server.session_manager
