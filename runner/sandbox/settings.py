"""Where a sandbox server lives: its one host spelling, its paths, and its OAuth settings.

Invariants:
    - One host spelling, :data:`HOST` (``127.0.0.1``), in every URL of every server.
    - Issuer and resource URLs are built once, through ``AuthSettings``, and every other
      module reads them back from it, so the authorization server metadata, the protected
      resource metadata and the ``iss`` parameter agree to the character (no trailing slash).
    - One scope, :data:`SCOPE`: default and required (valid too, with a server's step-up
      scope, if it has one: ``extra_scopes``).
    - Tokens are bound to their server's resource URL and the SDK checks it
      (``validate_token_resource=True``), so a token of one server is useless at another.
      (mcp 1.x has no such check and ignores the setting; there each server's provider knows
      only its own tokens, which has the same effect.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions

from runner.sandbox.compat import ServerAuthSettings

__all__ = ["HOST", "MCP_PATH", "SCOPE", "auth_settings"]

HOST: Final = "127.0.0.1"
"""The one host spelling of every sandbox URL."""
MCP_PATH: Final = "/mcp"
"""Path of the MCP endpoint (the protected resource) on every server."""
SCOPE: Final = "mcp"
"""The normal scope: default and required (a server's step-up scope is the only other)."""


def auth_settings(
    port: int, *, extra_scopes: Sequence[str] = (), registration: bool = True
) -> AuthSettings:
    """The SDK's auth settings of the server listening on ``port``: issuer, resource, scopes.

    Args:
        port: The server's port.
        extra_scopes: Scopes a client may register and ask for besides :data:`SCOPE`.
        registration: Whether dynamic client registration is enabled.
    """
    origin = f"http://{HOST}:{port}"
    return ServerAuthSettings.model_validate(
        {
            "issuer_url": origin,
            "resource_server_url": origin + MCP_PATH,
            "client_registration_options": ClientRegistrationOptions(
                enabled=registration,
                valid_scopes=[SCOPE, *extra_scopes],
                default_scopes=[SCOPE],
            ),
            "revocation_options": RevocationOptions(enabled=True),
            "required_scopes": [SCOPE],
            "validate_token_resource": True,
        }
    )
