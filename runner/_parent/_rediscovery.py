"""Finding a server's authorization server again, for a stored login that lost its metadata.

A hermes login without ``.meta.json`` (hermes's own ``build_oauth_auth`` writes none) holds
a refresh token but not where to send it. The renewal policy answers ``Rediscover``; this
module does the GETs, in the order and with the checks of ``runner._core._discovery``, so
the refresh goes to the right token endpoint instead of the login being retired.

Invariants: every response is read bounded (``MAX_METADATA_BYTES``), redirects are not
followed, the environment's proxies are not used, and the whole lookup is bounded by its
``timeout``; ``discover_metadata`` returns metadata, or None when the server publishes none
that fits, and raises only ``RefreshFailed`` (temporary: a network error, a timeout, a 5xx
or 429, which say nothing about what the server publishes) and cancellation.
"""

from __future__ import annotations

import ssl
import time

import anyio
from mcp.shared.auth import OAuthMetadata

from runner._core._discovery import (
    MAX_METADATA_BYTES,
    authorization_server_urls,
    default_metadata,
    origin,
    protected_resource_urls,
    read_resource_metadata,
    read_server_metadata,
)
from runner._io import _http as sdk
from runner.errors import RefreshFailed

__all__ = ["discover_metadata"]


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

                issuer = origin(server_url)
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
