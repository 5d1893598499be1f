"""Errors of the runner package. Public: hosts import these names.

Every outcome of a login that is not a token is one of these, carried in
``FlowResult.error``; nothing here is raised out of ``authorize_many`` except
``InvalidServerSpec`` (a configuration mistake, found before any login starts)::

    FlowError
     ├── InvalidServerSpec      (also ValueError)
     ├── AuthorizationDenied
     ├── FlowTimeout            (also TimeoutError)
     ├── CallbackPortBusy
     ├── NeedsInteraction
     ├── FlowCrashed
     ├── OAuthProtocolError
     │    └── ClientMetadataRefused
     ├── RefreshRefused
     ├── RefreshFailed
     ├── AccessRefused
     └── LoginLockUnavailable

Every class pickles and crosses the parent/child pipe by name (``to_wire`` /
``error_from_wire``), so a child can report a typed failure.

Warnings: what ``authorize_many`` contained rather than let it change a result. Each is
logged on the ``runner`` logger when it happens and warned (``warnings.warn``) once the
call is over, so a host that turns warnings into errors still had every child stopped
and every lease released first::

    UserWarning
     ├── HostCallbackWarning    a browser, pastes or progress callback raised or hung
     └── LoginCleanupWarning    tidying up after a login failed; its result is kept
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "AccessRefused",
    "AuthorizationDenied",
    "CallbackPortBusy",
    "ClientMetadataRefused",
    "FlowCrashed",
    "FlowError",
    "FlowTimeout",
    "HostCallbackWarning",
    "InvalidServerSpec",
    "LoginCleanupWarning",
    "LoginLockUnavailable",
    "NeedsInteraction",
    "OAuthProtocolError",
    "RefreshFailed",
    "RefreshRefused",
    "error_from_wire",
]


class FlowError(Exception):
    """Root of every login failure; ``str(err)`` is a sentence a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))

    def to_wire(self) -> dict[str, str]:
        """The error as a message payload: its class name and its text."""
        return {"kind": type(self).__name__, "message": self.message}


class InvalidServerSpec(FlowError, ValueError):
    """Raised when a server description is malformed: unknown key, bad URL, bad port.

    The only FlowError that ``authorize_many`` raises instead of returning, because it
    is found before any login starts and says which entry and key to fix.
    """


class AuthorizationDenied(FlowError):
    """The authorization server answered the redirect with a valid ``error=``
    (``access_denied`` when the person declined). Ends the login at once."""


class FlowTimeout(FlowError, TimeoutError):
    """The login did not finish within its timeout; its child was stopped."""

    @classmethod
    def no_login_within(cls, name: str, limit: float, doing: str = "") -> FlowTimeout:
        """The one wording of a login's timeout, used by the child and the parent alike.

        Args:
            name: the server's name.
            limit: the login's configured timeout in seconds (not the time that was left).
            doing: what was still going on, as a clause starting with a space, if known.
        """
        return cls(f"{name}: no login within {limit:g} s{doing}")


class CallbackPortBusy(FlowError):
    """The redirect port this login must use is held by another process."""


class NeedsInteraction(FlowError):
    """``interactive=False`` and the login needs a person in a browser."""


class FlowCrashed(FlowError):
    """The login's child process died or broke the message protocol."""


class OAuthProtocolError(FlowError):
    """Discovery, registration, token exchange or an issuer check failed."""


class ClientMetadataRefused(OAuthProtocolError):
    """The authorization server refused the Client ID Metadata Document this login
    presented as its ``client_id`` (``invalid_client``). The login's server is marked so in
    the store (hermes's ``.cimd-off``) and registers dynamically from then on."""


class RefreshRefused(FlowError):
    """The authorization server said the stored refresh token is dead: ``invalid_grant``
    (revoked, expired or rotated away), or ``invalid_client`` seen twice (the client's
    registration is gone too; ``code`` says which). Only this condemns a refresh token; a new
    login is needed. ``authorize_many`` handles it itself (a browser login, or
    ``NeedsInteraction`` when ``interactive=False``)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, {"code": self.code}))


class RefreshFailed(FlowError):
    """The token endpoint did not refresh the stored login, and did not say it is dead: the
    login is kept as it was.

    ``temporary`` is True when nothing was said (HTTP 5xx, 429 past its ``Retry-After``, a
    network error, a timeout): try again later; no person is asked to log in for it. False
    for a refusal that condemns nothing (``invalid_request``, a proxy's HTML page) or an
    answer that is no token response: a new login may replace the stored one once it
    succeeds.
    """

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, {"temporary": self.temporary}))


class AccessRefused(FlowError):
    """The MCP server kept refusing a request after the runner renewed its token: a 401
    again, or a 403 ``insufficient_scope`` again after a step-up, as many times as
    ``runner.provider`` allows per request (``MAX_RENEWALS_PER_REQUEST``)."""


class LoginLockUnavailable(FlowError):
    """The server's login lock cannot be taken at all (a directory or a symlink where the
    lock file should be, an unsafe directory): the login stops there rather than refresh or
    write without it, since another process could be doing the same. ``path`` names the
    file to fix."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, {"path": self.path}))


def _rebuild(cls: type[FlowError], message: str, attributes: dict[str, Any]) -> FlowError:
    """Unpickle an error that carries attributes beyond its message."""
    return cls(message, **attributes)


class HostCallbackWarning(UserWarning):
    """A callback the host passed to ``authorize_many`` failed; the logins went on.

    Raised when: ``browser`` raised (the login keeps waiting for a pasted callback),
    ``pastes`` raised (no more pastes are read; logins that can still finish in the
    browser do), or ``progress`` raised or had not returned when the call was over
    (later progress sentences are dropped). The message names the callback and the
    exception; it never changes a ``FlowResult``.
    """


class LoginCleanupWarning(UserWarning):
    """Tidying up after a login failed, and the login's result was kept.

    Raised when: stopping the login's child, closing its channel or releasing its port
    lease raised (``portlease.RegistryError`` when the registry has become unwritable),
    or another failure came after the child had delivered tokens. A login that got its
    tokens stays ``ok``; the child is still stopped and waited for.
    """


_BY_NAME: Final[Mapping[str, type[FlowError]]] = types.MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            FlowError,
            InvalidServerSpec,
            AuthorizationDenied,
            FlowTimeout,
            CallbackPortBusy,
            NeedsInteraction,
            FlowCrashed,
            OAuthProtocolError,
            ClientMetadataRefused,
            RefreshRefused,
            AccessRefused,
        )
    }
)


def error_from_wire(kind: str, message: str) -> FlowError:
    """Rebuild an error a child reported; an unknown kind becomes ``FlowCrashed``
    (a child that speaks of errors we do not know is not one we trust)."""
    cls = _BY_NAME.get(kind)
    if cls is None:
        return FlowCrashed(f"child reported an unknown error kind {kind!r}: {message}")
    return cls(message)
