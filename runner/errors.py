"""Every error and warning of the runner package, in one tree. Public: hosts import these.

Every outcome of a login that is not a token is a ``FlowError``, carried in
``FlowResult.error``; nothing of it is raised out of ``authorize_many`` except
``InvalidServerSpec`` (a configuration mistake, found before any login starts)::

    FlowError
     ├── InvalidServerSpec      (also ValueError)
     │    └── HermesConfigError   a hermes config.yaml that cannot be used
     ├── AuthorizationDenied
     ├── FlowTimeout            (also TimeoutError)
     ├── CallbackPortBusy
     ├── NeedsInteraction
     ├── FlowCrashed
     │    └── LauncherError       (also RuntimeError) a child could not be started
     ├── OAuthProtocolError
     │    └── ClientMetadataRefused
     ├── ServerUnreachable      the MCP or authorization server could not be connected to
     ├── RefreshRefused
     ├── RefreshFailed
     ├── AccessRefused
     └── LoginLockUnavailable

The token stores' own errors, raised by their methods (``TokenStore``, ``HermesTokenStore``)::

    TokenStoreError             the store cannot do what was asked; nothing moved or deleted
     ├── LoginLockTimeout         another process kept a server's login lock past the timeout
     └── NotALoginFile            logout found a file it cannot read as a login; left alone

Every ``FlowError`` pickles and crosses the parent/child pipe by name (``to_wire`` /
``error_from_wire``), so a child can report a typed failure.

Warnings: what ``authorize_many`` contained rather than let it change a result. Each is
logged on the ``runner`` logger when it happens and warned (``warnings.warn``) once the
call is over, so a host that turns warnings into errors still had every child stopped
and every lease released first::

    UserWarning
     ├── HostCallbackWarning    a browser, pastes or progress callback raised or hung
     ├── LoginCleanupWarning    tidying up after a login failed; its result is kept
     ├── TokenStoreWarning      a token file was unreadable (kept aside) or not saved
     └── RevocationWarning      logged out, but a token may still be alive at its server
"""

from __future__ import annotations

import os
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
    "HermesConfigError",
    "HostCallbackWarning",
    "InvalidServerSpec",
    "LauncherError",
    "LoginCleanupWarning",
    "LoginLockTimeout",
    "LoginLockUnavailable",
    "NeedsInteraction",
    "NotALoginFile",
    "OAuthProtocolError",
    "RefreshFailed",
    "RefreshRefused",
    "RevocationWarning",
    "ServerUnreachable",
    "TokenStoreError",
    "TokenStoreWarning",
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


class HermesConfigError(InvalidServerSpec):
    """A hermes config that cannot be used: unreadable, not YAML/JSON, or an invalid value.

    ``str(err)`` is one line naming the file (and the server and key, when there is one) and
    what to do. An ``InvalidServerSpec``, so callers of ``authorize_many`` catch both alike.
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


class LauncherError(FlowCrashed, RuntimeError):
    """A login's child process could not be started: the zygote died, refused the fork, or
    could not start at all (``Runner.warm_up`` raises it; a login gets it as its result)."""


class OAuthProtocolError(FlowError):
    """Discovery, registration, token exchange or an issuer check failed."""


class ServerUnreachable(FlowError):
    """A server of the login (the MCP server or its authorization server) could not be
    connected to: refused, no route, a name that does not resolve, a TLS handshake that
    failed. ``str(err)`` names the URL and says "could not connect"; nothing was sent, so
    trying again later (or fixing the ``url``) is what to do."""


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


class TokenStoreError(Exception):
    """The store cannot do what was asked; nothing was moved aside or deleted.

    Raised by a token store (its constructor, ``load``, ``save``, ``delete``, ``logout``,
    ``hold``) when:

    - its directory is unsafe: owned by another user, group- or world-writable, not a
      directory, or cannot be created;
    - reading or writing failed for a reason of the moment (``EMFILE``, ``EIO``, ``ENOSPC``,
      a permission error on the directory), so the file may be fine and stays where it is;
    - an unreadable token file could not be moved aside;
    - ``hold``: another process kept the server's login lock past the timeout, or the lock
      file cannot be opened.

    ``str(err)`` names the file or directory, what is wrong and what to do; ``path`` is that
    file or directory.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(message)
        self.path = os.fspath(path)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.message))


class LoginLockTimeout(TokenStoreError):
    """``hold`` waited its whole timeout: another process kept the server's login lock
    (it is logging in to that server, or refreshing its tokens)."""


class NotALoginFile(TokenStoreError):
    """Logout found a file where a server's login is kept (or one ``logout --all`` would
    take for one) that it cannot read as a login of this store: not a login record, a
    symlink, unreadable, or named so that no server name maps to it. It is left alone,
    never deleted; ``str(err)`` names it, says why and what to do."""


class RevocationWarning(UserWarning):
    """Logged out (the login's files are removed), but a token's revocation did not happen
    (the revocation endpoint was down, answered 5xx or an error, timed out, or belongs to
    another issuer than the one that granted the token): the message names each token that
    may still be alive at the server and why."""


class TokenStoreWarning(UserWarning):
    """A token file was unreadable and has been moved aside (the server logs in again), or
    delivered tokens could not be saved (the next run logs in again)."""


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
            ServerUnreachable,
            RefreshRefused,
            AccessRefused,
            LauncherError,
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
