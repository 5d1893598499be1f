"""How a login identifies its client to the authorization server. Pure.

The MCP authorization spec (2025-11-25, "Client Registration Approaches") orders them:

1. a pre-registered client (``client_id``, maybe ``client_secret``) when one is configured;
2. a Client ID Metadata Document (``client_metadata_url``: the client id *is* an HTTPS URL
   the server fetches) when the server advertises ``client_id_metadata_document_supported``;
3. dynamic client registration (RFC 7591) otherwise.

A stored dynamic registration is reused (its redirect URI pins a port:
``runner._core._port_policy``) before a document is presented: swapping the client id would
orphan the tokens it holds, as hermes-agent also decides (``_maybe_use_cimd``).

Guarantees:

- ``auth_method`` answers the token endpoint authentication of a client: the configured
  method when there is one; ``none`` for a client without a secret (a public native
  client, RFC 8252 §8.4); for one with a secret, ``client_secret_basic`` when the server
  supports it or does not say (RFC 8414 §2: its default), else ``client_secret_post``
  when supported, else ``client_secret_basic``;
- ``presents_document`` is True only when a document is configured, its ports are known,
  no client is configured or stored, the server has not refused it (hermes's ``.cimd-off``)
  and the server's stored metadata, if any, advertises support. The SDK still checks the
  server's metadata at login time and registers dynamically when it does not advertise
  support;
- ``document_url_problem`` says why a URL cannot be a client id (None when it can): HTTPS,
  a path other than ``/``, no user info, no fragment, no ``.`` or ``..`` segment (the SDK
  checks the first two; a server rejects the others mid-login with an opaque page).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final
from urllib.parse import urlsplit

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata

__all__ = ["AUTH_METHODS", "auth_method", "document_url_problem", "presents_document"]

#: The token endpoint authentication methods a login here can use.
AUTH_METHODS: Final = ("none", "client_secret_basic", "client_secret_post")


def auth_method(
    configured: str | None, *, has_secret: bool, supported: Collection[str] | None
) -> str:
    """The token endpoint authentication method of a client (see the module docstring)."""
    if configured is not None:
        return configured
    if not has_secret:
        return "none"
    if supported is None or "client_secret_basic" in supported:
        return "client_secret_basic"
    if "client_secret_post" in supported:
        return "client_secret_post"
    return "client_secret_basic"


def presents_document(
    *,
    document_url: str | None,
    ports: Collection[int],
    client_id: str | None,
    client_info: OAuthClientInformationFull | None,
    metadata: OAuthMetadata | None,
    refused: bool,
) -> bool:
    """Whether a login presents its Client ID Metadata Document as its client id, given
    the configured client, the stored registration it may reuse and the server's stored
    metadata."""
    if document_url is None or not ports or client_id is not None or refused:
        return False
    if client_info is not None:
        return False  # a registration is held: it keeps its tokens' client id
    # mcp 1.x's model may lack the field: no sign of support, then.
    return (
        metadata is None or getattr(metadata, "client_id_metadata_document_supported", None) is True
    )


def document_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Client ID Metadata Document's URL, or None when it can."""
    try:
        parts = urlsplit(url)
        userinfo = parts.username is not None or parts.password is not None
    except ValueError:
        return "it is not a URL"
    if parts.scheme != "https" or not parts.hostname:
        return "it must be an https URL"
    if parts.path in ("", "/"):
        return "it must have a path (not just /)"
    if userinfo or parts.fragment or parts.query:
        return "it must have no user info, query or fragment"
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return "it must have no . or .. segment"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "it holds spaces or control characters"
    return None
