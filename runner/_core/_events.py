"""The progress events (public as ``runner.events``, documented there)."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner._core._spec import FlowResult
from runner.errors import FlowError

__all__ = [
    "BrowserFailed",
    "CallbackReceived",
    "DeviceCodeIssued",
    "Event",
    "Finished",
    "Listening",
    "LoggingIn",
    "LookingUpMetadata",
    "MetadataLookupFailed",
    "NotChallenged",
    "PasteNotUsed",
    "PasteRefused",
    "PortTaken",
    "RefreshNotDone",
    "Refreshing",
    "RegisteringDynamically",
    "StoredLoginNotReused",
    "UsingStoredLogin",
    "WaitingForBrowser",
]


@dataclass(frozen=True)
class Event:
    """Something that happened to a login.

    Attributes:
        name: The server's name; None when the event belongs to no login.
    """

    name: str | None


# --- the stored login ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredLoginNotReused(Event):
    """The stored login is another server's (the entry's URL changed): it is left alone and
    a new login made, since tokens belong to the server that issued them."""

    stored_url: str

    def __str__(self) -> str:
        return f"stored login is for {self.stored_url}; not reused"


@dataclass(frozen=True)
class UsingStoredLogin(Event):
    """The stored tokens are the answer: no refresh, no browser.

    Attributes:
        reason: Why they will do (they are valid; or the refresh was refused but the
            access token has not expired yet).
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Refreshing(Event):
    """Refreshing the stored login at its issuer's token endpoint, in this process."""

    def __str__(self) -> str:
        return "refreshing its stored login"


@dataclass(frozen=True)
class RefreshNotDone(Event):
    """The refresh did not work; what follows depends on ``error`` (a ``RefreshRefused``
    whose grant is dead, or a ``RefreshFailed``: unreachable, or refused for now). The
    stored login is kept unless the server said it is dead."""

    error: FlowError

    def __str__(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class LookingUpMetadata(Event):
    """The stored login holds a refresh token but not where to send it: looking up the
    server's authorization server."""

    def __str__(self) -> str:
        return "its stored login lacks the server's metadata; looking it up"


@dataclass(frozen=True)
class MetadataLookupFailed(Event):
    """That lookup failed for now (``error``); the stored login is kept."""

    error: FlowError

    def __str__(self) -> str:
        return str(self.error)


# --- a login through the authorization server --------------------------------------


@dataclass(frozen=True)
class LoggingIn(Event):
    """A login through the authorization server begins (a leased port and a child).

    Attributes:
        reason: Why one is needed ("nothing usable is stored", "its stored login has
            expired", "the server asks for more scopes (...)", ...).
    """

    reason: str

    def __str__(self) -> str:
        return f"{self.reason}; logging in"


@dataclass(frozen=True)
class PortTaken(Event):
    """The port the login wanted (its registration's, or a client metadata document's) is
    held by another live lease: it registers again on a free port.

    Attributes:
        ports: The port, or a document's ports, that were taken.
        why: The registry's explanation (who holds it).
        document: Whether they were a Client ID Metadata Document's ports.
    """

    ports: tuple[int, ...]
    why: str
    document: bool = False

    def __str__(self) -> str:
        ports = ", ".join(str(port) for port in self.ports)
        if self.document:
            return (
                f"the client metadata document's ports ({ports}) are taken ({self.why}); "
                "registering"
            )
        return f"port {ports} is taken ({self.why}); registering again"


@dataclass(frozen=True)
class Listening(Event):
    """The login's child serves its callback at ``url`` (a loopback address)."""

    url: str

    def __str__(self) -> str:
        return f"listening on {self.url}"


@dataclass(frozen=True)
class NotChallenged(Event):
    """The server let ``initialize`` through without asking for a login: none is needed
    yet (the login finishes ``ok`` and ``deferred``)."""

    status: int

    def __str__(self) -> str:
        return f"the server let initialize through (HTTP {self.status}): no login yet"


@dataclass(frozen=True)
class WaitingForBrowser(Event):
    """A person must log in: the host's ``browser`` is being asked to open the
    authorization URL, and pasted callbacks are routed to this login."""

    def __str__(self) -> str:
        return "waiting for the login in the browser"


@dataclass(frozen=True)
class DeviceCodeIssued(Event):
    """A device login (``ServerSpec.flow == "device"``, RFC 8628) needs a person: open
    ``verification_uri`` on any device (a phone will do) and enter ``user_code``, within
    ``expires_in`` seconds. No browser is opened and no paste is read for it.

    Attributes:
        user_code: The short code the person enters.
        verification_uri: Where to enter it.
        verification_uri_complete: The same address with the code in it (for a link or a
            QR code), if the server gave one.
        expires_in: Seconds the code lives.
    """

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float

    def __str__(self) -> str:
        return f"open {self.verification_uri} on any device and enter the code {self.user_code}"


@dataclass(frozen=True)
class BrowserFailed(Event):
    """The host's ``browser`` raised: a person must open ``url`` some other way (the login
    goes on waiting, for a callback or a paste).

    Attributes:
        error: What it raised, as "Type: message".
        url: The authorization URL (not in ``repr``: it carries the login's state).
    """

    error: str
    url: str = field(repr=False)

    def __str__(self) -> str:
        return f"could not open a browser ({self.error}); open this address yourself: {self.url}"


@dataclass(frozen=True)
class PasteRefused(Event):
    """A pasted callback reached this login but was refused (``reason``: an error from the
    server, a missing code, ...); the login goes on waiting."""

    reason: str

    def __str__(self) -> str:
        return f"pasted callback not accepted: {self.reason}"


@dataclass(frozen=True)
class PasteNotUsed(Event):
    """A paste no login took: not a callback, no login's state, or its login has just
    ended (``name`` is that login's, else None). ``reason`` says what to paste instead."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class CallbackReceived(Event):
    """The authorization server's answer arrived, at the callback URL (``source`` "http":
    the browser's redirect) or pasted ("paste"): the code is being exchanged for tokens.
    ``source`` "device": a device login was approved; its tokens are being checked."""

    source: str

    def __str__(self) -> str:
        if self.source == "device":
            return "approved on the device; checking the tokens"
        return f"callback received ({self.source}); getting tokens"


@dataclass(frozen=True)
class RegisteringDynamically(Event):
    """The server refused the Client ID Metadata Document (``error``): the login is tried
    once more with dynamic registration, and the document is not presented again."""

    error: FlowError

    def __str__(self) -> str:
        return f"{self.error}; registering dynamically instead"


# --- the end ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished(Event):
    """The login's outcome, the same ``FlowResult`` ``authorize_many`` returns for it. Comes
    once per server, after all its other events."""

    name: str
    result: FlowResult

    def __str__(self) -> str:
        if self.result.error is not None:
            return str(self.result.error)
        return "no login needed yet" if self.result.tokens is None else "logged in"
