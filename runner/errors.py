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
     └── RefreshRefused

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
    "AuthorizationDenied",
    "CallbackPortBusy",
    "FlowCrashed",
    "FlowError",
    "FlowTimeout",
    "HostCallbackWarning",
    "InvalidServerSpec",
    "LoginCleanupWarning",
    "NeedsInteraction",
    "OAuthProtocolError",
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


class RefreshRefused(FlowError):
    """The authorization server refused the stored refresh token (HTTP 400 or 401:
    ``invalid_grant``, a revoked or rotated-away token, an unknown client): the tokens are
    of no more use and a new login is needed. ``authorize_many`` handles it itself (a
    browser login, or ``NeedsInteraction`` when ``interactive=False``); hosts that refresh
    through ``runner.refresh`` see it."""


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
            RefreshRefused,
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
