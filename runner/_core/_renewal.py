"""What a login needs now: the one renewal policy. Pure (no clock, no I/O: ``now`` is given).

Every caller asks ``decide`` and carries out its answer: ``authorize_many``'s fast path and
its logins (``runner._parent._supervisor``), the host's provider
(``runner._hosts._provider``, through the supervisor) and ``mcp-oauth status``
(``login_state``). So they agree on every login.

``decide(situation)`` answers one of:

- ``UseStored``: the stored access token is good now;
- ``Refresh``: refresh it at its token endpoint (in the parent, under the server's lock);
- ``Rediscover``: a refresh token is held but not where to send it (no stored metadata,
  as in a hermes login without ``.meta.json``): look the server's metadata up first;
- ``LogIn``: a login through the authorization server (a person, in a browser), with the
  scopes and the challenge it carries and the registration it may reuse;
- ``GiveUp``: nothing more is done now; ``error`` says why (a person is needed but
  ``interactive`` is False, or the token endpoint failed for the moment).

The caller feeds back what it did (``Situation.refresh_failure``, ``rediscovered``) and asks
again; a login's decisions end within three questions (refresh, rediscover, refresh).

Rules, in order (each a guarantee):

1. A stored login for another server URL, or for another configured client, is not this
   login's: as if nothing were stored.
2. A step-up (403 ``insufficient_scope``) is a login for the union of the scopes held (or
   configured) and the scopes challenged; tokens are of no help.
3. An access token is used while it is valid: not the one the server just refused, and
   not expiring within the margin (``effective_margin``: at most a quarter of its
   lifetime, and 0 when nothing could refresh it: it is used to its end then).
4. A refresh refused or failed while the access token is still unexpired keeps both: the
   access token is used to its end, and the next question after expiry refreshes again
   (an authorization server may refuse to refresh a token that is still valid).
5. Only ``RefreshFailure.DEAD_GRANT``/``DEAD_CLIENT`` (the server said ``invalid_grant``,
   or ``invalid_client`` twice) condemns a refresh token; a dead client is not reused.
6. A refresh that failed for the moment (``UNAVAILABLE``: 5xx, 429, network, timeout)
   gives up for now with ``RefreshFailed`` (temporary): nobody is sent to a browser for a
   server's hiccup, and the login is kept. A refusal that is neither (``REFUSED``: another
   4xx, an unreadable answer) may log in anew; nothing is dropped before that succeeds.
7. A refresh token goes only to the issuer that granted it: metadata naming another
   issuer means a new login, never a refresh. Missing metadata is looked up
   (``Rediscover``) once, never a reason to retire the login.
8. ``LogIn`` asks for the configured scope when there is one (never replaced by the
   SDK's own choice), else the challenged scope, else lets the SDK choose; without
   ``interactive`` it is ``GiveUp(NeedsInteraction)``.

The policy never writes: a new login replaces the stored one only once it succeeded.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata

from runner._core._challenge import Challenge, union_scopes
from runner._core._stored import StoredLogin, issuer_of
from runner.errors import FlowError, NeedsInteraction, RefreshFailed

__all__ = [
    "DEFAULT_MARGIN",
    "Decision",
    "GiveUp",
    "LogIn",
    "LoginRequest",
    "LoginState",
    "Rediscover",
    "Refresh",
    "RefreshFailure",
    "Situation",
    "UseStored",
    "decide",
    "effective_margin",
    "login_state",
]

#: Seconds before its expiry that an access token is renewed (at most a quarter of its
#: lifetime): a token about to expire is refreshed now rather than fail mid-request.
DEFAULT_MARGIN: Final = 60.0


class RefreshFailure(enum.Enum):
    """What this call's refresh of the stored login came to, when it did not succeed."""

    DEAD_GRANT = "dead grant"  # invalid_grant: revoked, expired or rotated away
    DEAD_CLIENT = "dead client"  # invalid_client, seen twice: the registration is gone too
    REFUSED = "refused"  # another refusal, or an answer that is no token response
    UNAVAILABLE = "unavailable"  # 5xx, 429, network, timeout: nothing was said


@dataclasses.dataclass(frozen=True)
class Situation:
    """Everything ``decide`` looks at.

    Attributes:
        name: The server's name, for messages.
        stored: What the token store holds for this server (read under its lock).
        server_url: The MCP server's URL (the spec's).
        client_id: The configured, pre-registered client, if any.
        scope: The configured scope, if any.
        now: Seconds since the epoch.
        interactive: Whether a person may be asked to log in.
        margin: The caller's renewal margin (``DEFAULT_MARGIN``).
        challenge: What the server's 401 or 403 asked for, if one came.
        rejected: The access token the server just refused (401), if any.
        refresh_failure: What this call's refresh came to, if it was tried and failed.
        rediscovered: Whether the server's metadata was looked up in this call already.
    """

    name: str
    stored: StoredLogin | None
    server_url: str
    client_id: str | None = None
    scope: str | None = None
    now: float = 0.0
    interactive: bool = True
    margin: float = DEFAULT_MARGIN
    challenge: Challenge | None = None
    rejected: str | None = dataclasses.field(default=None, repr=False)
    refresh_failure: RefreshFailure | None = None
    rediscovered: bool = False


@dataclasses.dataclass(frozen=True)
class LoginRequest:
    """Why a host asks for a login beyond ``authorize_many``'s own: the server's challenge to
    a request, the access token it refused, and the host's margin (``runner._hosts._provider``)."""

    challenge: Challenge | None = None
    rejected: str | None = dataclasses.field(default=None, repr=False)
    margin: float = DEFAULT_MARGIN


@dataclasses.dataclass(frozen=True)
class UseStored:
    """The stored tokens are the answer."""

    login: StoredLogin
    reason: str


@dataclasses.dataclass(frozen=True)
class Refresh:
    """Refresh ``login`` at its token endpoint (its issuer's)."""

    login: StoredLogin


@dataclasses.dataclass(frozen=True)
class Rediscover:
    """Look up the server's metadata for ``login`` (it holds a refresh token but no token
    endpoint), then ask again with ``rediscovered=True``."""

    login: StoredLogin


@dataclasses.dataclass(frozen=True)
class LogIn:
    """Log in through the authorization server.

    Attributes:
        scope: The scopes to ask for; None lets the SDK choose (the challenge's, else what
            the server advertises).
        challenge: The server's challenge, carried to the login's child.
        client_info: A stored registration the login may reuse (the child checks that it
            names this login's redirect URI), or None to register anew.
        metadata: The server's stored metadata, if any (whether it supports a Client ID
            Metadata Document: ``runner._core._identity``).
        reason: Why, for the progress line.
    """

    scope: str | None
    challenge: Challenge | None
    client_info: OAuthClientInformationFull | None
    metadata: OAuthMetadata | None
    reason: str


@dataclasses.dataclass(frozen=True)
class GiveUp:
    """Nothing more is done now; ``error`` is the login's outcome."""

    error: FlowError


Decision = UseStored | Refresh | Rediscover | LogIn | GiveUp


class LoginState(enum.Enum):
    """What a stored login is good for, as ``mcp-oauth status`` shows it."""

    VALID = "valid"  # used as it is
    REFRESHABLE = "refreshable"  # renewed without a person (refresh, maybe after a lookup)
    NEEDS_LOGIN = "needs login"  # only a person can renew it


def effective_margin(login: StoredLogin, margin: float) -> float:
    """Seconds before expiry that ``login``'s access token counts as expired: ``margin``,
    at most a quarter of the token's lifetime, and 0 when it holds nothing to refresh with
    (renewing early is of no use then: the token is used to its end)."""
    if not _refreshable(login):
        return 0.0
    lifetime = login.tokens.expires_in
    return margin if not lifetime or lifetime <= 0 else min(margin, lifetime / 4)


def decide(s: Situation) -> Decision:
    """What the login of ``s`` needs now (see the module docstring for the rules)."""
    stored = s.stored if _ours(s) else None
    challenge = s.challenge
    if challenge is not None and challenge.step_up:
        held = stored.tokens.scope if stored is not None else None
        scope = union_scopes(s.scope, held, challenge.scope)
        return _log_in(s, stored, scope, f"the server asks for more scopes ({scope})")
    if stored is None:
        return _log_in(s, None, s.scope or _challenged(s), "nothing usable is stored")
    tokens = stored.tokens
    usable = bool(tokens.access_token) and tokens.access_token != s.rejected
    if usable and _fresh(stored, s.now, effective_margin(stored, s.margin)):
        return UseStored(stored, "using its stored login")
    failure = s.refresh_failure
    if failure is not None and usable and _fresh(stored, s.now, 0.0):
        return UseStored(stored, "its refresh was refused; its token is used until it expires")
    if failure in (RefreshFailure.DEAD_GRANT, RefreshFailure.DEAD_CLIENT):
        return _log_in(s, stored, None, "the server refused the stored login")
    if failure is RefreshFailure.UNAVAILABLE:
        return GiveUp(
            RefreshFailed(
                f"{s.name}: the token endpoint could not refresh the stored login now; "
                "it was kept: try again later",
                temporary=True,
            )
        )
    if failure is RefreshFailure.REFUSED:
        return _log_in(s, stored, None, "the server did not refresh the stored login")
    if not _refreshable(stored):
        return _log_in(s, stored, None, "its stored login has expired")
    metadata = stored.oauth_metadata
    if metadata is None or metadata.token_endpoint is None:
        if not s.rediscovered:
            return Rediscover(stored)
        return _log_in(s, stored, None, "the server's token endpoint could not be found")
    if stored.granted_by is not None and stored.granted_by != issuer_of(metadata):
        return _log_in(s, stored, None, "its authorization server has changed")
    return Refresh(stored)


def login_state(
    stored: StoredLogin | None,
    *,
    name: str,
    server_url: str,
    client_id: str | None,
    now: float,
    margin: float = DEFAULT_MARGIN,
) -> LoginState:
    """``decide``'s answer for a login nobody is using right now, as a state."""
    answer = decide(
        Situation(
            name=name,
            stored=stored,
            server_url=server_url,
            client_id=client_id,
            now=now,
            margin=margin,
        )
    )
    if isinstance(answer, UseStored):
        return LoginState.VALID
    if isinstance(answer, Refresh | Rediscover):
        return LoginState.REFRESHABLE
    return LoginState.NEEDS_LOGIN


def _ours(s: Situation) -> bool:
    stored = s.stored
    if stored is None or stored.server_url != s.server_url:
        return False
    if s.client_id is not None:
        client = stored.client_info
        return client is not None and client.client_id == s.client_id
    return True


def _challenged(s: Situation) -> str | None:
    return s.challenge.scope if s.challenge is not None else None


def _fresh(login: StoredLogin, now: float, margin: float) -> bool:
    return login.expires_at is None or login.expires_at > now + margin


def _refreshable(login: StoredLogin) -> bool:
    client = login.client_info
    return bool(login.tokens.refresh_token and client is not None and client.client_id)


def _log_in(s: Situation, stored: StoredLogin | None, scope: str | None, reason: str) -> Decision:
    if scope is None:
        scope = s.scope or _challenged(s)
    if not s.interactive:
        return GiveUp(
            NeedsInteraction(
                f"{s.name}: a person must log in in a browser ({reason}; interactive=False)"
            )
        )
    reusable = stored is not None and s.refresh_failure is not RefreshFailure.DEAD_CLIENT
    if reusable and stored is not None and stored.oauth_metadata is not None:
        # A registration belongs to the issuer it was made with.
        reusable = stored.granted_by in (None, issuer_of(stored.oauth_metadata))
    return LogIn(
        scope=scope,
        challenge=s.challenge,
        client_info=stored.client_info if reusable and stored is not None else None,
        metadata=stored.oauth_metadata if stored is not None else None,
        reason=reason,
    )
