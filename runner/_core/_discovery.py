"""Where a server's authorization server metadata is, and whether a document fits. Pure.

For a stored login that lost its metadata (``runner._core._renewal`` answers
``Rediscover``; ``runner._parent._rediscovery`` does the GETs). The lookup follows the MCP
authorization spec (2025-11-25, "Authorization Server Discovery"; SEP-985) and the SDK:

- the protected resource metadata at a challenge's ``resource_metadata``, then at the
  path-aware, then the root well-known URL; its first authorization server; that server's
  metadata at the RFC 8414 path-aware URL, the OIDC path-aware URL, the OIDC path-appended
  URL (or, with no path, the two root URLs); with no resource metadata at all (2025-03-26
  servers), the server's origin is the authorization server, and its default endpoints
  (``/authorize``, ``/token``, ``/register``) stand when it publishes no metadata;
- trust: resource metadata whose ``resource`` does not cover the server's URL is refused
  (RFC 9728 §3.3), and authorization server metadata whose ``issuer`` is not the server it
  was asked of is refused (RFC 8414 §3.3): a lookup never lends a refresh token to a host
  that merely published a document. The readers return None for a document that does not
  fit or does not decode, never raise.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urljoin, urlsplit

from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import ValidationError

__all__ = [
    "MAX_METADATA_BYTES",
    "authorization_server_urls",
    "default_metadata",
    "origin",
    "protected_resource_urls",
    "read_resource_metadata",
    "read_server_metadata",
]

#: The largest metadata document read; a real one is a few KB.
MAX_METADATA_BYTES: Final = 256 * 1024


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def protected_resource_urls(server_url: str, resource_metadata: str | None = None) -> list[str]:
    """Where the server's protected resource metadata may be, in the order to try."""
    urls = [resource_metadata] if resource_metadata else []
    base = origin(server_url)
    path = urlsplit(server_url).path.rstrip("/")
    if path:
        urls.append(f"{base}/.well-known/oauth-protected-resource{path}")
    urls.append(f"{base}/.well-known/oauth-protected-resource")
    return urls


def authorization_server_urls(issuer: str) -> list[str]:
    """Where the metadata of the authorization server ``issuer`` may be, in the order to
    try (RFC 8414 §3.1, OpenID Connect Discovery §4)."""
    base = origin(issuer)
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return [
            f"{base}/.well-known/oauth-authorization-server",
            f"{base}/.well-known/openid-configuration",
        ]
    return [
        f"{base}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/openid-configuration{path}",
        f"{base}{path}/.well-known/openid-configuration",
    ]


def default_metadata(server_url: str) -> OAuthMetadata:
    """A 2025-03-26 server's default endpoints at its origin (no metadata published)."""
    base = origin(server_url)
    return OAuthMetadata.model_validate(
        {
            "issuer": base,
            "authorization_endpoint": urljoin(base, "/authorize"),
            "token_endpoint": urljoin(base, "/token"),
            "registration_endpoint": urljoin(base, "/register"),
            "response_types_supported": ["code"],
        }
    )


def read_resource_metadata(server_url: str, body: bytes) -> ProtectedResourceMetadata | None:
    """The protected resource metadata in ``body``, if it is one that covers ``server_url``."""
    try:
        metadata = ProtectedResourceMetadata.model_validate_json(body)
    except (ValidationError, ValueError, RecursionError):
        return None
    try:
        allowed = check_resource_allowed(
            requested_resource=resource_url_from_server_url(server_url),
            configured_resource=str(metadata.resource),
        )
    except ValueError:
        return None
    return metadata if allowed else None


def read_server_metadata(issuer: str, body: bytes) -> OAuthMetadata | None:
    """The authorization server metadata in ``body``, if its issuer is ``issuer``."""
    try:
        metadata = OAuthMetadata.model_validate_json(body)
    except (ValidationError, ValueError, RecursionError):
        return None
    if str(metadata.issuer).rstrip("/") != issuer.rstrip("/"):
        return None
    return metadata
