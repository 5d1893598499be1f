"""Finding a server's authorization server again, for a stored login that lost its metadata.

A hermes login without ``.meta.json`` (hermes's own ``build_oauth_auth`` writes none) holds
a refresh token but not where to send it. The renewal policy (``runner._core._renewal``) answers
``Rediscover``; this module looks the metadata up the way the MCP authorization spec and the
SDK do, so the refresh goes to the right token endpoint instead of the login being retired.

Pure: ``protected_resource_urls``, ``authorization_server_urls``, ``default_metadata``,
``read_resource_metadata``, ``read_server_metadata``. I/O: ``discover_metadata`` (GETs).

Invariants:

- order of lookups (MCP 2025-11-25 "Authorization Server Discovery", SEP-985): the
  protected resource metadata at a challenge's ``resource_metadata``, then at the
  path-aware, then the root well-known URL; its first authorization server; that server's
  metadata at the RFC 8414 path-aware URL, the OIDC path-aware URL, the OIDC path-appended
  URL (or, with no path, the two root URLs); with no resource metadata at all (2025-03-26
  servers), the server's origin is the authorization server, and its default endpoints
  (``/authorize``, ``/token``, ``/register``) stand when it publishes no metadata;
- trust: resource metadata whose ``resource`` does not cover the server's URL is refused
  (RFC 9728 §3.3), and authorization server metadata whose ``issuer`` is not the server it
  was asked of is refused (RFC 8414 §3.3): a lookup never lends a refresh token to a host
  that merely published a document;
- every response is read bounded (``MAX_METADATA_BYTES``), redirects are not followed, the
  environment's proxies are not used, and the whole lookup is bounded by its ``timeout``;
- ``discover_metadata`` returns metadata, or None when the server publishes none that
  fits, and raises only ``RefreshFailed`` (temporary: a network error, a timeout, a 5xx or
  429, which say nothing about what the server publishes) and cancellation.
"""

from __future__ import annotations

import ssl
import time
from typing import Final
from urllib.parse import urljoin, urlsplit

import anyio
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import ValidationError

from runner._io import _http as sdk
from runner.errors import RefreshFailed

__all__ = [
    "MAX_METADATA_BYTES",
    "authorization_server_urls",
    "default_metadata",
    "discover_metadata",
    "protected_resource_urls",
    "read_resource_metadata",
    "read_server_metadata",
]

#: The largest metadata document read; a real one is a few KB.
MAX_METADATA_BYTES: Final = 256 * 1024


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def protected_resource_urls(server_url: str, resource_metadata: str | None = None) -> list[str]:
    """Where the server's protected resource metadata may be, in the order to try."""
    urls = [resource_metadata] if resource_metadata else []
    origin = _origin(server_url)
    path = urlsplit(server_url).path.rstrip("/")
    if path:
        urls.append(f"{origin}/.well-known/oauth-protected-resource{path}")
    urls.append(f"{origin}/.well-known/oauth-protected-resource")
    return urls


def authorization_server_urls(issuer: str) -> list[str]:
    """Where the metadata of the authorization server ``issuer`` may be, in the order to
    try (RFC 8414 §3.1, OpenID Connect Discovery §4)."""
    origin = _origin(issuer)
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return [
            f"{origin}/.well-known/oauth-authorization-server",
            f"{origin}/.well-known/openid-configuration",
        ]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


def default_metadata(server_url: str) -> OAuthMetadata:
    """A 2025-03-26 server's default endpoints at its origin (no metadata published)."""
    origin = _origin(server_url)
    return OAuthMetadata.model_validate(
        {
            "issuer": origin,
            "authorization_endpoint": urljoin(origin, "/authorize"),
            "token_endpoint": urljoin(origin, "/token"),
            "registration_endpoint": urljoin(origin, "/register"),
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


async def discover_metadata(
    server_url: str,
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    resource_metadata: str | None = None,
) -> OAuthMetadata | None:
    """The metadata of the authorization server that serves ``server_url`` (see the module
    docstring for the order and the checks), or None when none fits.

    Raises:
        RefreshFailed: a lookup failed for the moment (temporary).
    """
    http = sdk.http_client_module()
    verify: ssl.SSLContext | bool = tls if tls is not None else True
    deadline = time.monotonic() + timeout
    try:
        with anyio.fail_after(timeout):
            async with http.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
            ) as client:

                async def fetch(url: str) -> bytes | None:
                    left = max(0.1, deadline - time.monotonic())
                    async with client.stream(
                        "GET", url, headers={"Accept": "application/json"}, timeout=left
                    ) as response:
                        status = int(response.status_code)
                        if status == 429 or status >= 500:
                            raise RefreshFailed(
                                f"{server_url}: looking up its authorization server got "
                                f"HTTP {status}; the stored login was kept",
                                temporary=True,
                            )
                        if status != 200:
                            return None
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > MAX_METADATA_BYTES:
                                return None
                        return bytes(body)

                issuer = _origin(server_url)
                legacy = True
                for url in protected_resource_urls(server_url, resource_metadata):
                    body = await fetch(url)
                    resource = read_resource_metadata(server_url, body) if body else None
                    if resource is not None:
                        issuer, legacy = str(resource.authorization_servers[0]), False
                        break
                for url in authorization_server_urls(issuer):
                    body = await fetch(url)
                    metadata = read_server_metadata(issuer, body) if body else None
                    if metadata is not None:
                        return metadata
                return default_metadata(server_url) if legacy else None
    except TimeoutError:
        raise RefreshFailed(
            f"{server_url}: looking up its authorization server took over {timeout:g} s; "
            "the stored login was kept",
            temporary=True,
        ) from None
    except (http.HTTPError, OSError, ValueError) as exc:
        raise RefreshFailed(
            f"{server_url}: looking up its authorization server failed "
            f"({type(exc).__name__}); the stored login was kept",
            temporary=True,
        ) from None
