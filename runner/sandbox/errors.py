"""The sandbox's errors.

Invariants:
    - Every error the sandbox raises on purpose is a :class:`SandboxError`; a caller that
      catches it catches them all::

          SandboxError
           ├── BrowserError
           │    └── CallbackUnreachable
           └── TokenRejected

    - No message carries a token, a code or a query string.
"""

from __future__ import annotations

__all__ = ["BrowserError", "CallbackUnreachable", "SandboxError", "TokenRejected"]


class SandboxError(Exception):
    """Raised when the sandbox cannot start or stop, or is used outside its life."""


class BrowserError(SandboxError):
    """Raised by :meth:`Sandbox.browser` when it cannot carry a login to its callback.

    The authorization server answered without a redirect, a URL left loopback, there were too
    many redirects, or a request failed or timed out.
    """


class CallbackUnreachable(BrowserError):
    """Raised by :meth:`Sandbox.browser` when nothing accepts a connection at the callback."""


class TokenRejected(SandboxError):
    """Raised when an MCP server answers 401 or 403 to a bearer token.

    Attributes:
        url: The MCP endpoint.
        status: The HTTP status (401: unknown, expired or foreign token; 403: scope).
    """

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url} rejected the access token (HTTP {status})")
        self.url = url
        self.status = status
